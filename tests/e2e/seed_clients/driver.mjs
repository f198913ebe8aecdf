// Runs one seed flow against a live creditstream server and prints one JSON line:
// {"result": <what the flow returned>, "seen": [<UI calls, in order>]}.
//
//   CREDITSTREAM_URL=http://127.0.0.1:8000 CREDITSTREAM_AUTH=<token or key> \
//   CREDITSTREAM_TOKEN=<user token> node driver.mjs <flow> '<json arguments>'
//
// Flows: start-generation {params} (seed 000's complete flow, until the video or the error is
// shown), check-status {taskId}, refresh-balance, award {walletAddress, tier | points},
// points {walletAddress}, generate-video / generate-audio {walletAddress, script} (seed 001).
import { setUpPage, seen, finished } from './page.mjs';
import { checkStatus, refreshUserBalance, startGeneration } from './seed000.mjs';
import { awardByTier, awardPoints, generateAudio, generateVideo, getPoints } from './seed001.mjs';

const TIMEOUT_MS = 60_000;
const [flow, rawArgs = '{}'] = process.argv.slice(2);
const args = JSON.parse(rawArgs);
setUpPage({
  baseUrl: process.env.CREDITSTREAM_URL,
  auth: process.env.CREDITSTREAM_AUTH,
  token: process.env.CREDITSTREAM_TOKEN || process.env.CREDITSTREAM_AUTH,
});

const untilShown = async (start) => {
  await start();
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`nothing shown within ${TIMEOUT_MS} ms`)),
      TIMEOUT_MS);
  });
  await Promise.race([finished, timeout]);
  clearTimeout(timer);
  return null;
};

const flows = {
  'start-generation': () => untilShown(() => startGeneration(args.params)),
  'check-status': () => untilShown(() => checkStatus(args.taskId)),
  'refresh-balance': () => refreshUserBalance(),
  award: () => (args.tier !== undefined ? awardByTier(args.walletAddress, args.tier)
    : awardPoints(args.walletAddress, args.points)),
  points: () => getPoints(args.walletAddress),
  'generate-video': () => generateVideo(args.walletAddress, args.script),
  'generate-audio': () => generateAudio(args.walletAddress, args.script),
};

if (!(flow in flows)) {
  console.error(`unknown flow ${flow}; expected one of ${Object.keys(flows).join(', ')}`);
  process.exit(64);
}
try {
  const result = await flows[flow]();
  console.log(JSON.stringify({ result: result ?? null, seen }));
  process.exit(0);
} catch (error) {
  console.log(JSON.stringify({ error: String(error && error.stack || error), seen }));
  process.exit(1);
}
