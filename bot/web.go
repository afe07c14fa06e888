package bot

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/slack-go/slack"

	"github.com/konstruct/konstruct"
	"github.com/konstruct/konstruct/internal/markdown"
)

// WebConfig configures Web.
type WebConfig struct {
	// APIURL is the Web API base with its trailing slash (slack.api_url).
	APIURL     string
	HTTPClient *http.Client
	// Source, when set, is asked for the active workspaces when a team is
	// not known yet (a worker-only process has no connection manager to
	// tell it). It is called at most once per SourceInterval.
	Source         func(ctx context.Context) ([]konstruct.Workspace, error)
	SourceInterval time.Duration
	// OnCall observes every Web API call (metrics): the method, how long it
	// took and its error (nil on success).
	OnCall func(method string, d time.Duration, err error)
	// OnRefused is called once per bot token that Slack refused for good
	// (invalid_auth, token_revoked, account_inactive…) with the team it
	// belongs to: that team alone should be marked revoked. The team's
	// calls fail with EUNAUTHORIZED until Set gives it another token.
	OnRefused func(teamID string, err error)
}

// Web performs Slack Web API calls on behalf of any known workspace, picking
// the workspace's bot token by team id. It is safe for concurrent use.
//
// Writes are never retried here: a chat.postMessage whose response was lost
// may have posted, and retrying would post twice. Callers get a
// *konstruct.Error with ERATELIMIT and can read the wait with RetryAfter.
type Web struct {
	cfg WebConfig

	mu       sync.RWMutex
	clients  map[string]webClient // team id → client
	refused  map[string]bool      // bot tokens Slack refused for good
	lastLoad time.Time
	loadMu   sync.Mutex

	namesMu sync.Mutex
	names   map[string]string // team/user → display name
}

// webClient remembers the token a client was made with, so Set can tell
// whether a workspace's token changed.
type webClient struct {
	*slack.Client
	token     string
	botUserID string
}

// NewWeb returns a Web with no workspaces; Set or Source provide them.
func NewWeb(cfg WebConfig) *Web {
	if cfg.SourceInterval == 0 {
		cfg.SourceInterval = 2 * time.Second
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{Timeout: 30 * time.Second}
	}
	return &Web{cfg: cfg, clients: map[string]webClient{}, refused: map[string]bool{}, names: map[string]string{}}
}

// Set replaces the known workspaces (only active ones are kept).
func (w *Web) Set(ws []konstruct.Workspace) {
	clients := make(map[string]webClient, len(ws))
	w.mu.RLock()
	old := w.clients
	w.mu.RUnlock()
	for _, x := range ws {
		if x.Status != "" && x.Status != konstruct.WorkspaceActive || x.Problem != "" {
			continue
		}
		if c, ok := old[x.TeamID]; ok && c.token == x.BotToken {
			c.botUserID = x.BotUserID
			clients[x.TeamID] = c
			continue
		}
		clients[x.TeamID] = webClient{token: x.BotToken, botUserID: x.BotUserID, Client: w.newClient(x.BotToken)}
	}
	w.mu.Lock()
	w.clients = clients
	w.mu.Unlock()
}

func (w *Web) newClient(botToken string) *slack.Client {
	return slack.New(botToken, slack.OptionAPIURL(w.cfg.APIURL), slack.OptionHTTPClient(w.cfg.HTTPClient))
}

// client returns the Web API client for a team (ENOTFOUND if unknown).
func (w *Web) client(ctx context.Context, teamID string) (webClient, error) {
	w.mu.RLock()
	c, ok := w.clients[teamID]
	w.mu.RUnlock()
	if ok {
		return c, nil
	}
	if w.cfg.Source != nil {
		w.loadMu.Lock()
		if time.Since(w.lastLoad) >= w.cfg.SourceInterval {
			w.lastLoad = time.Now()
			ws, err := w.cfg.Source(ctx)
			if err == nil {
				w.Set(ws)
			}
		}
		w.loadMu.Unlock()
		w.mu.RLock()
		c, ok = w.clients[teamID]
		w.mu.RUnlock()
		if ok {
			return c, nil
		}
	}
	return webClient{}, konstruct.Errorf(konstruct.ENOTFOUND, "workspace %s is not connected", teamID)
}

// observe reports a call to OnCall and maps its error; a bot token Slack
// refused for good is reported, once, to OnRefused for its team alone.
func (w *Web) observe(teamID string, c webClient, method string, start time.Time, err error) error {
	if w.cfg.OnCall != nil {
		w.cfg.OnCall(method, time.Since(start), err)
	}
	err = slackError(method, err)
	if err != nil && botTokenRefused(err) {
		w.mu.Lock()
		first := !w.refused[c.token]
		w.refused[c.token] = true
		w.mu.Unlock()
		if first && w.cfg.OnRefused != nil {
			w.cfg.OnRefused(teamID, err)
		}
	}
	return err
}

// botTokenRefused reports whether Slack refused a bot token for good.
// no_permission is left out: on the Web API it can mean a channel or a
// scope the token lacks, not a dead token.
func botTokenRefused(err error) bool {
	var se *konstruct.SlackError
	if !errors.As(err, &se) {
		return false
	}
	return fatalAuth[se.Code] && se.Code != "no_permission"
}

// maxMarkdownBlock is the most the markdown block holds (characters).
const maxMarkdownBlock = 12000

// options renders content for Slack: Markdown goes in a `markdown` block,
// which Slack renders as standard Markdown (at most 12,000 characters),
// with the same words without Markdown syntax as the notification and
// fallback text; plain Text is sent as it is. Both are made inert first
// (neutralize.go): what the bot writes mentions only the people allowed.
// The content's buttons follow the markdown block in an actions block.
// Should the inert Markdown outgrow the block (a zero-width space per
// broken token), the message goes as text alone rather than not at all,
// and without its buttons (blocks would hide the text).
func options(c konstruct.Content, allowed allowance) []slack.MsgOption {
	text := c.Text
	if text == "" && c.Markdown != "" {
		text = markdown.Plain(c.Markdown)
	}
	opts := []slack.MsgOption{slack.MsgOptionText(neutralizeText(text, allowed), false)}
	md := ""
	if c.Markdown != "" {
		md = neutralizeMarkdown(c.Markdown, allowed, false)
		if utf8.RuneCountInString(md) > maxMarkdownBlock {
			md = ""
		}
	}
	if md != "" {
		blocks := []slack.Block{slack.NewMarkdownBlock("", md)}
		if b := actionBlock(c.Buttons); b != nil {
			blocks = append(blocks, b)
		}
		opts = append(opts, slack.MsgOptionBlocks(blocks...))
	} else {
		// An update without blocks must clear the blocks of the previous
		// version of the message.
		opts = append(opts, slack.MsgOptionBlocks())
	}
	return opts
}

// actionsBlockID names the block of the bot's buttons under an answer.
const actionsBlockID = "konstruct_actions"

// actionBlock renders the bot's own buttons (nil for none). Their text and
// values come from the product, never from the model, and are written as
// they are: neutralizing is for model text (neutralize.go).
func actionBlock(buttons []konstruct.Button) slack.Block {
	if len(buttons) == 0 {
		return nil
	}
	els := make([]slack.BlockElement, 0, len(buttons))
	for _, b := range buttons {
		els = append(els, slack.NewButtonBlockElement(b.ActionID, b.Value, slack.NewTextBlockObject(slack.PlainTextType, b.Text, true, false)))
	}
	return slack.NewActionBlock(actionsBlockID, els...)
}

// Post posts in a thread (threadTS "" = top level) and returns the ts.
func (w *Web) Post(ctx context.Context, teamID, channelID, threadTS string, content konstruct.Content) (string, error) {
	c, err := w.client(ctx, teamID)
	if err != nil {
		return "", err
	}
	opts := options(content, allowanceFor(ctx, c.botUserID))
	if threadTS != "" {
		opts = append(opts, slack.MsgOptionTS(threadTS))
	}
	start := time.Now()
	_, ts, err := c.PostMessageContext(ctx, channelID, opts...)
	return ts, w.observe(teamID, c, "chat.postMessage", start, err)
}

// Update replaces the content of a bot message.
func (w *Web) Update(ctx context.Context, teamID, channelID, ts string, content konstruct.Content) error {
	c, err := w.client(ctx, teamID)
	if err != nil {
		return err
	}
	start := time.Now()
	_, _, _, err = c.UpdateMessageContext(ctx, channelID, ts, options(content, allowanceFor(ctx, c.botUserID))...)
	return w.observe(teamID, c, "chat.update", start, err)
}

// Delete deletes a bot message.
func (w *Web) Delete(ctx context.Context, teamID, channelID, ts string) error {
	c, err := w.client(ctx, teamID)
	if err != nil {
		return err
	}
	start := time.Now()
	_, _, err = c.DeleteMessageContext(ctx, channelID, ts)
	return w.observe(teamID, c, "chat.delete", start, err)
}

// PostEphemeral shows text to one user only, in a thread when threadTS is
// set. The text is made inert like any other (neutralize.go).
func (w *Web) PostEphemeral(ctx context.Context, teamID, channelID, userID, threadTS, text string) error {
	c, err := w.client(ctx, teamID)
	if err != nil {
		return err
	}
	opts := []slack.MsgOption{slack.MsgOptionText(neutralizeText(text, allowanceFor(ctx, c.botUserID)), false)}
	if threadTS != "" {
		opts = append(opts, slack.MsgOptionTS(threadTS))
	}
	start := time.Now()
	_, err = c.PostEphemeralContext(ctx, channelID, userID, opts...)
	return w.observe(teamID, c, "chat.postEphemeral", start, err)
}

// Replies returns every message of a thread, oldest first, following the
// pagination cursor (at most maxPages pages of 200), with readable text
// and authors (Readable, UserName): Slack's &amp; &lt; &gt; decoded, and,
// but for the bot's own messages, mentions as names.
func (w *Web) Replies(ctx context.Context, teamID, channelID, threadTS string) ([]konstruct.ThreadMessage, error) {
	c, err := w.client(ctx, teamID)
	if err != nil {
		return nil, err
	}
	const maxPages = 20
	var out []konstruct.ThreadMessage
	cursor := ""
	for page := 0; page < maxPages; page++ {
		start := time.Now()
		msgs, more, next, err := c.GetConversationRepliesContext(ctx, &slack.GetConversationRepliesParameters{
			ChannelID: channelID, Timestamp: threadTS, Cursor: cursor, Limit: 200,
		})
		if err := w.observe(teamID, c, "conversations.replies", start, err); err != nil {
			return out, err
		}
		for _, m := range msgs {
			tm := konstruct.ThreadMessage{TS: m.Timestamp, User: m.User, BotID: m.BotID, SubType: m.SubType, Text: decodeEntities(m.Text)}
			if m.User != "" && m.User != c.botUserID {
				tm.Author = w.UserName(ctx, teamID, m.User)
			}
			if tm.BotID == "" || tm.User != c.botUserID {
				tm.Text = w.readable(ctx, teamID, c.botUserID, m.Text)
			}
			out = append(out, tm)
		}
		if !more || next == "" {
			break
		}
		cursor = next
	}
	return out, nil
}

// UserName returns a user's display name (cached; the id itself when
// users.info fails, which is not worth failing a reply over).
func (w *Web) UserName(ctx context.Context, teamID, userID string) string {
	key := teamID + "/" + userID
	w.namesMu.Lock()
	name, ok := w.names[key]
	w.namesMu.Unlock()
	if ok {
		return name
	}
	c, err := w.client(ctx, teamID)
	if err != nil {
		return userID
	}
	start := time.Now()
	u, err := c.GetUserInfoContext(ctx, userID)
	if w.observe(teamID, c, "users.info", start, err) != nil || u == nil {
		return userID
	}
	name = u.Profile.DisplayName
	if name == "" {
		name = u.RealName
	}
	if name == "" {
		name = u.Name
	}
	if name == "" {
		name = userID
	}
	w.namesMu.Lock()
	w.names[key] = name
	w.namesMu.Unlock()
	return name
}

// StartStream starts a natively streamed message in a thread. Outside DMs
// Slack needs the recipient user and team. The Markdown of StartStream,
// AppendStream and StopStream is made inert piece by piece (neutralize.go).
func (w *Web) StartStream(ctx context.Context, teamID, channelID, threadTS, recipientUser, markdown string) (string, error) {
	c, err := w.client(ctx, teamID)
	if err != nil {
		return "", err
	}
	opts := []slack.MsgOption{slack.MsgOptionTS(threadTS), slack.MsgOptionRecipientUserID(recipientUser), slack.MsgOptionRecipientTeamID(teamID)}
	if markdown != "" {
		opts = append(opts, slack.MsgOptionMarkdownText(neutralizeMarkdown(markdown, allowanceFor(ctx, c.botUserID), true)))
	}
	start := time.Now()
	_, ts, err := c.StartStreamContext(ctx, channelID, opts...)
	return ts, w.observe(teamID, c, "chat.startStream", start, err)
}

// AppendStream appends Markdown (≤ 12,000 characters) to a streamed message.
func (w *Web) AppendStream(ctx context.Context, teamID, channelID, ts, markdown string) error {
	c, err := w.client(ctx, teamID)
	if err != nil {
		return err
	}
	start := time.Now()
	md := neutralizeMarkdown(markdown, allowanceFor(ctx, c.botUserID), true)
	_, _, err = c.AppendStreamContext(ctx, channelID, ts, slack.MsgOptionMarkdownText(md))
	return w.observe(teamID, c, "chat.appendStream", start, err)
}

// StopStream ends a streamed message, optionally appending final Markdown.
func (w *Web) StopStream(ctx context.Context, teamID, channelID, ts, markdown string) error {
	c, err := w.client(ctx, teamID)
	if err != nil {
		return err
	}
	var opts []slack.MsgOption
	if markdown != "" {
		opts = append(opts, slack.MsgOptionMarkdownText(neutralizeMarkdown(markdown, allowanceFor(ctx, c.botUserID), true)))
	}
	start := time.Now()
	_, _, err = c.StopStreamContext(ctx, channelID, ts, opts...)
	return w.observe(teamID, c, "chat.stopStream", start, err)
}
