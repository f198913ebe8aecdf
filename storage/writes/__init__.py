"""The write path: every change to money, holds and jobs goes through here, grouped into batches.

In: an operation — a coroutine that runs core's use cases against an `OperationUnitOfWork` —
with the `Touches` it declares (the accounts, holds and jobs it may change) and, for a keyed
request, its `IdempotencyKey`; `BatchWriter.run` / `run_keyed` take it.
Out: the operation's answer (`KeyedResult` for a keyed one, stored with the key in the same
commit) once its batch has committed, and the batch's events handed to the publisher after it.

Inside, one batch is one transaction (`writer` runs lanes of them, `begun` keeps a lane's connection with its next
transaction begun, `transaction` runs one; `batch` is its state in
memory; `committed_accounts` what the writer's batches last committed, so a batch may skip its locking read; `operation` is one operation's working copy; `batch_session` with `batch_pg` or
`batch_sql` does its reads and writes per database, `pg_records` turning PostgreSQL's rows into
core's objects; `batch_writes` and `pg_arrays` turn pending changes into set-based statements; `idempotency` claims keys and stores answers).
"""
