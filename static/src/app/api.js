// The server's HTTP API (docs/API.md), with the access token when there is one.
import { getToken } from "./session.js";

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

export const docPath = (name) => `/api/documents/${encodeURIComponent(name)}`;

export async function api(path, { method = "GET", body, binary = false } = {}) {
  const headers = {};
  const token = getToken();
  if (token) headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (binary) headers.Accept = "application/octet-stream";
  let response;
  try {
    response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), cache: "no-store" });
  } catch {
    throw new ApiError(0, "the server cannot be reached");
  }
  if (!response.ok) {
    let message = `${response.status} ${response.statusText}`;
    try {
      message = (await response.json()).error ?? message;
    } catch {
      // not JSON
    }
    throw new ApiError(response.status, message);
  }
  return binary ? new Uint8Array(await response.arrayBuffer()) : response.json();
}
