// Start `mock-arm --tls` for the JavaScript SDK tests and build an `@azure/arm-network`
// client that talks to it. Mirrors mock-server/tests/sdk/conftest.py: same seed and fast
// configuration, the binary from MOCK_ARM_BIN (run.sh sets it from CARGO_TARGET_DIR).

import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { Agent, request } from "node:https";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";

import { NetworkManagementClient } from "@azure/arm-network";

const here = dirname(fileURLToPath(import.meta.url));
const fixtures = resolve(here, "..", "fixtures");
const repo = resolve(here, "..", "..", "..");

export const SUB = "00000000-0000-0000-0000-000000000001";
export const RG = "network";
export const LOCATION = "westeurope";

function binary() {
  const path =
    process.env.MOCK_ARM_BIN ||
    join(process.env.CARGO_TARGET_DIR || join(repo, "target"), "debug", "mock-arm");
  if (!existsSync(path)) {
    throw new Error(
      `mock-arm binary not found at ${path}; run \`cargo build -p mock-server --bin mock-arm\` or set MOCK_ARM_BIN`,
    );
  }
  return path;
}

// The first two lines mock-arm prints: where it listens and where its CA certificate is.
function firstLines(stream, count, timeoutMs) {
  return new Promise((resolveLines, reject) => {
    const lines = [];
    const reader = createInterface({ input: stream });
    const timer = setTimeout(() => {
      reader.close();
      reject(new Error(`mock-arm printed ${JSON.stringify(lines)} within ${timeoutMs} ms, expected ${count} lines`));
    }, timeoutMs);
    reader.on("line", (line) => {
      lines.push(line.trim());
      if (lines.length === count) {
        clearTimeout(timer);
        reader.close();
        resolveLines(lines);
      }
    });
    reader.on("close", () => {
      if (lines.length < count) {
        clearTimeout(timer);
        reject(new Error(`mock-arm exited after printing ${JSON.stringify(lines)}`));
      }
    });
  });
}

/** A running mock: its base URL, an HTTPS agent that trusts its CA, and `stop()`. */
export async function startMock() {
  const dir = mkdtempSync(join(tmpdir(), "mock-arm-js-"));
  // The admin API needs this token (X-Mock-Admin-Token); a fresh one per mock.
  const adminToken = randomBytes(16).toString("hex");
  const child = spawn(
    binary(),
    [
      "--port", "0",
      "--tls",
      "--seed", join(fixtures, "seed.yaml"),
      "--config", join(fixtures, "fast.yaml"),
      "--state", join(dir, "state.json"),
      "--admin-token", adminToken,
    ],
    { stdio: ["ignore", "pipe", "inherit"] },
  );
  try {
    const [listening, caLine] = await firstLines(child.stdout, 2, 30_000);
    if (!listening.startsWith("listening on https://127.0.0.1:")) {
      throw new Error(`unexpected first line from mock-arm: ${listening}`);
    }
    if (!caLine.startsWith("ca certificate: ")) {
      throw new Error(`unexpected second line from mock-arm: ${caLine}`);
    }
    // Keep draining stdout so the mock never blocks on a full pipe.
    child.stdout.resume();
    const url = listening.split(" ", 3)[2];
    const ca = readFileSync(caLine.slice("ca certificate: ".length));
    const agent = new Agent({ ca, keepAlive: true });
    return {
      url,
      agent,
      adminToken,
      async stop() {
        agent.destroy();
        child.kill("SIGKILL");
        if (child.exitCode === null && child.signalCode === null) {
          await new Promise((done) => child.once("exit", done));
        }
        rmSync(dir, { recursive: true, force: true });
      },
    };
  } catch (error) {
    child.kill("SIGKILL");
    rmSync(dir, { recursive: true, force: true });
    throw error;
  }
}

/**
 * The whole credential the SDK needs: a static bearer token (mock-arm checks that one is
 * present, not what it says). A `TokenCredential` is any object with `getToken`.
 */
export const staticToken = {
  async getToken() {
    return { token: "js-sdk-static-token", expiresOnTimestamp: Date.now() + 3_600_000 };
  },
};

/**
 * A client for `mock`, plus the log of every request it sent (method, URL, status), so a
 * test can check the api-version on the wire and that long-running operations were polled.
 */
export function networkClient(mock) {
  const sent = [];
  const policies = [
    {
      // Every request, the SDK's LRO polls included, goes through the mock's CA-trusting agent.
      position: "perCall",
      policy: {
        name: "mockArmAgent",
        sendRequest(request, next) {
          request.agent = mock.agent;
          return next(request);
        },
      },
    },
    {
      position: "perRetry",
      policy: {
        name: "mockArmRequestLog",
        async sendRequest(request, next) {
          const response = await next(request);
          sent.push({ method: request.method, url: request.url, status: response.status });
          return response;
        },
      },
    },
  ];
  const client = new NetworkManagementClient(staticToken, SUB, {
    endpoint: mock.url,
    additionalPolicies: policies,
    // A 412 or 404 is an answer to check, not something to retry.
    retryOptions: { maxRetries: 0 },
  });
  return { client, sent };
}

/**
 * Everything the JS tests do through mock-arm's `/_admin` API goes through here, so that
 * a change to how `/_admin` is authenticated is made in one place.
 */
export function admin(mock, path, { method = "GET", body } = {}) {
  return new Promise((done, fail) => {
    const req = request(
      `${mock.url}/_admin/${path}`,
      {
        method,
        agent: mock.agent,
        headers: { "content-type": "application/json", "x-mock-admin-token": mock.adminToken },
      },
      (res) => {
        let text = "";
        res.setEncoding("utf8");
        res.on("data", (chunk) => (text += chunk));
        res.on("end", () => {
          if (res.statusCode >= 400) {
            fail(new Error(`/_admin/${path} answered ${res.statusCode}: ${text}`));
          } else {
            done(text ? JSON.parse(text) : null);
          }
        });
      },
    );
    req.on("error", fail);
    if (body !== undefined) req.write(JSON.stringify(body));
    req.end();
  });
}
