// Seed 001 ("Pricing & Frontend Integration") prints request and response JSON and describes
// the frontend's steps in prose, but no code. These functions follow that text step by step,
// with its paths and bodies unchanged:
//  - award after a confirmed payment: POST /api/payments/award {walletAddress, tier | points}
//    (creditstream accepts this only from a server key: the product's backend, not a browser)
//  - check the balance: GET /api/users/:walletAddress/points
//  - generate: POST /api/generate (video) or /api/generate/audio, body {walletAddress, script};
//    "If 402 is received, show user a message: 'Insufficient credits. You need X more credits
//    for this.' and prompt to purchase. On success, update UI to reflect the new credit balance
//    from the response."
// `showMessage`, `promptToPurchase`, `showError` and `updateCreditsDisplay` are page globals.

export const awardByTier = async (walletAddress, tier) => {
  const response = await fetch('/api/payments/award', {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ walletAddress, tier })
  });
  // { walletAddress, awardedPoints, newTotalPoints, contentType, contentCredits }
  return response.json();
};

export const awardPoints = async (walletAddress, points) => {
  const response = await fetch('/api/payments/award', {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ walletAddress, points })
  });
  return response.json();
};

export const getPoints = async (walletAddress) => {
  const response = await fetch(`/api/users/${walletAddress}/points`);
  // { walletAddress, points, trial_expires_at }
  const { points } = await response.json();
  updateCreditsDisplay(points);
  return points;
};

const generate = async (path, walletAddress, script) => {
  const response = await fetch(path, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ walletAddress, script })
  });
  const data = await response.json();
  if (response.status === 402) {
    // "Insufficient credits. You need X more credits for this."
    showMessage(data.message);
    promptToPurchase();
    return null;
  }
  if (!response.ok) {
    showError(data.message || (data.error && data.error.message));
    return null;
  }
  // { jobId, videoId, status, creditsDeducted, remainingCredits, message }
  updateCreditsDisplay(data.remainingCredits);
  return data;
};

export const generateVideo = (walletAddress, script) =>
  generate('/api/generate', walletAddress, script);

export const generateAudio = (walletAddress, script) =>
  generate('/api/generate/audio', walletAddress, script);
