// Benchmark peer: the smallest Bolt for JavaScript app that does what Konstruct
// does at the front door — hold a Socket Mode connection per workspace, ack
// every envelope, and answer a mention with a reply in its thread.
//
// `konstruct bench` starts it with SLACK_API_URL and BOLT_WORKSPACES (a JSON
// file: [{"app_token","bot_token"}…]) and waits for the line "ready N".
'use strict';
const fs = require('fs');
const { App, LogLevel } = require('@slack/bolt');

const apiUrl = process.env.SLACK_API_URL;
const file = process.env.BOLT_WORKSPACES;
if (!apiUrl || !file) {
  console.error('SLACK_API_URL and BOLT_WORKSPACES are required');
  process.exit(2);
}
const workspaces = JSON.parse(fs.readFileSync(file, 'utf8'));
const clientOptions = { slackApiUrl: apiUrl, retryConfig: { retries: 0 } };

async function start(ws) {
  const app = new App({
    token: ws.bot_token,
    appToken: ws.app_token,
    socketMode: true,
    logLevel: LogLevel.ERROR,
    clientOptions,
    installerOptions: { clientOptions },
  });
  app.event('app_mention', async ({ event, client }) => {
    await client.chat.postMessage({
      channel: event.channel,
      thread_ts: event.thread_ts || event.ts,
      text: `Hello <@${event.user}>, Bolt heard you.`,
    });
  });
  app.error(async (err) => console.error('bolt error:', err.message || err));
  await app.start();
  return app;
}

(async () => {
  const apps = [];
  for (const ws of workspaces) {
    apps.push(await start(ws));
  }
  console.log(`ready ${apps.length}`);
  const stop = async () => {
    await Promise.allSettled(apps.map((a) => a.stop()));
    process.exit(0);
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
})().catch((err) => {
  console.error('bolt peer failed:', err);
  process.exit(1);
});
