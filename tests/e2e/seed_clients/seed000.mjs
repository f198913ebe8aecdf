// Seed 000 ("Frontend Integration: Balance Update Guide"): its JavaScript, copied verbatim.
// Only `export` was added so the driver can call the functions, and the mis-encoded emoji in
// the comments were restored. `token`, `updateBalanceDisplay`, `showSuccessNotification`,
// `showErrorNotification`, `displayVideo` and `showError` are the page's globals (page.mjs).

// ### 1. After Polling Shows Success

// Example polling logic
export const checkStatus = async (taskId) => {
  const response = await fetch(`/api/v1/history/${taskId}`);
  const task = await response.json();
  
  if (task.status === 'success') {
    // ✅ Generation succeeded - balance was deducted
    await refreshUserBalance();
    showSuccessNotification(task.resultUrl);
  } else if (task.status === 'failed') {
    // ❌ Generation failed - NO charge
    showErrorNotification(task.errorMessage || 'Generation failed');
    // No need to refresh balance
  } else if (task.status === 'processing') {
    // ⏳ Still processing - check again later
    setTimeout(() => checkStatus(taskId), 5000);
  }
};

// ### 2. Refresh Balance Function
export const refreshUserBalance = async () => {
  const response = await fetch('/api/v1/user/profile', {
    headers: { 'Authorization': `Bearer ${token}` }
  });
  const userData = await response.json();
  
  // Update UI with new balance
  updateBalanceDisplay(userData.balance);
};

// ## Example: Complete Flow

// 1. Start generation
export const startGeneration = async (params) => {
  const response = await fetch('/api/v1/video/generate', {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify(params)
  });
  
  const { id } = await response.json();
  
  // 2. Start polling
  pollTaskStatus(id);
};

// 2. Poll for status
export const pollTaskStatus = async (taskId) => {
  const response = await fetch(`/api/v1/history/${taskId}`);
  const task = await response.json();
  
  if (task.status === 'success') {
    // ✅ Success - refresh balance and show result
    await refreshUserBalance();
    displayVideo(task.resultUrl);
  } else if (task.status === 'failed') {
    // ❌ Failed - show error (no charge)
    showError(task.errorMessage);
  } else {
    // ⏳ Still processing - poll again
    setTimeout(() => pollTaskStatus(taskId), 5000);
  }
};
