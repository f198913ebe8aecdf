// The page around the seeds' code. It supplies only what a browser page would: `fetch` bound to
// the server (base URL, and the Authorization header when a call sets none — the seeds' calls
// run behind a logged-in session), the `token` global, and the UI functions the seeds call,
// which here record what the user would see.

export const seen = [];
const FINAL = new Set(['displayVideo', 'showError', 'showSuccessNotification',
  'showErrorNotification', 'promptToPurchase']);
let finish;
export const finished = new Promise((resolve) => { finish = resolve; });

export const setUpPage = ({ baseUrl, auth, token }) => {
  const browserFetch = globalThis.fetch;
  globalThis.fetch = (input, init = {}) => {
    const headers = new Headers(init.headers || {});
    if (auth && !headers.has('Authorization')) headers.set('Authorization', `Bearer ${auth}`);
    return browserFetch(new URL(input, baseUrl), { ...init, headers });
  };
  globalThis.token = token;
  const ui = (name) => (...args) => {
    seen.push({ ui: name, args });
    if (FINAL.has(name)) finish();
  };
  for (const name of ['updateBalanceDisplay', 'updateCreditsDisplay', 'showMessage', ...FINAL]) {
    globalThis[name] = ui(name);
  }
};
