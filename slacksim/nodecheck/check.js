// Fidelity check: Slack's official Node SDK (@slack/socket-mode + @slack/web-api)
// against a running slacksim. The Go test (TestNodeSDK) starts the sim, runs this
// script with SLACK_API_URL / SLACK_APP_TOKEN / SLACK_BOT_TOKEN, then posts a
// mention through the control endpoint. The script answers in the thread and
// prints "replied <channel> <thread_ts> <reply_ts>" before exiting 0.
'use strict';
const { SocketModeClient, LogLevel } = require('@slack/socket-mode');
const { WebClient } = require('@slack/web-api');

const apiUrl = process.env.SLACK_API_URL;
const appToken = process.env.SLACK_APP_TOKEN;
const botToken = process.env.SLACK_BOT_TOKEN;
if (!apiUrl || !appToken || !botToken) {
  console.error('SLACK_API_URL, SLACK_APP_TOKEN and SLACK_BOT_TOKEN are required');
  process.exit(2);
}

const web = new WebClient(botToken, { slackApiUrl: apiUrl, retryConfig: { retries: 0 } });
const socket = new SocketModeClient({
  appToken,
  logLevel: LogLevel.WARN,
  clientOptions: { slackApiUrl: apiUrl },
});

const timeout = setTimeout(() => {
  console.error('timed out waiting for an app_mention');
  process.exit(1);
}, 15000);

socket.on('app_mention', async ({ event, ack }) => {
  await ack();
  try {
    const auth = await web.auth.test();
    if (!event.text.includes(`<@${auth.user_id}>`)) {
      throw new Error(`mention text ${event.text} lacks <@${auth.user_id}>`);
    }
    const thread = event.thread_ts || event.ts;
    const res = await web.chat.postMessage({
      channel: event.channel,
      thread_ts: thread,
      text: `Hello <@${event.user}>, Node heard you.`,
    });
    const replies = await web.conversations.replies({ channel: event.channel, ts: thread });
    if (replies.messages.length !== 2) {
      throw new Error(`thread has ${replies.messages.length} messages, want 2`);
    }
    console.log(`replied ${event.channel} ${thread} ${res.ts}`);
    clearTimeout(timeout);
    await socket.disconnect();
    process.exit(0);
  } catch (err) {
    console.error('reply failed:', err);
    process.exit(1);
  }
});

socket.on('connected', () => console.log('connected'));

(async () => {
  try {
    await socket.start();
  } catch (err) {
    console.error('start failed:', err);
    process.exit(1);
  }
})();
