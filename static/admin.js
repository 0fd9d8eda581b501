// Admin requests (replay, live chain changes): sends the admin token kept for this tab, and
// asks for it when the server says one is needed (401) or the one sent was wrong (403).
"use strict";

window.adminRequest = async function adminRequest(method, url, body) {
  const headers = { "Content-Type": "application/json" };
  const token = sessionStorage.getItem("admin-token");
  if (token) headers.Authorization = `Bearer ${token}`;
  const response = await fetch(url, { method, headers, body: JSON.stringify(body) });
  if (response.status === 401 || (response.status === 403 && token)) {
    sessionStorage.removeItem("admin-token");
    const entered = window.prompt("Admin token (VIEWER_ADMIN_TOKEN):");
    if (entered) {
      sessionStorage.setItem("admin-token", entered.trim());
      return adminRequest(method, url, body);
    }
  }
  const result = await response.json().catch(() => ({ error: `HTTP ${response.status}` }));
  if (!response.ok) {
    const error = new Error(result.error || `HTTP ${response.status}`);
    error.status = response.status;
    throw error;
  }
  return result;
};
