package slacksim

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"mime"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Fault makes a Web API method misbehave. Status 429 answers with a
// Retry-After of RetryAfter seconds (default 1); another non-200 Status
// answers that status with an HTML body, as Slack's edge does; Error answers
// HTTP 200 {"ok":false,"error":Error}; Delay sleeps first (alone, it only slows
// the call down). Count limits how many calls are affected (0 = until ClearFaults).
type Fault struct {
	Status     int
	RetryAfter int
	Delay      time.Duration
	Count      int
	Error      string
}

// InjectFault installs a fault on a Web API method ("chat.postMessage"),
// replacing any previous one.
func (s *Server) InjectFault(method string, f Fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults[method] = &f
}

// ClearFaults removes every injected fault.
func (s *Server) ClearFaults() {
	s.mu.Lock()
	defer s.mu.Unlock()
	clear(s.faults)
}

// apiError is a Slack error string answered as {"ok":false,"error":…}.
type apiError string

// call is one parsed Web API request.
type call struct {
	method string
	p      url.Values
	tok    *tokenInfo
	w      *workspace // the token's workspace (bot tokens)
}

func (c *call) get(k string) string { return c.p.Get(k) }

type handlerFunc func(s *Server, c *call) (map[string]any, error)

var handlers = map[string]handlerFunc{
	"api.test":                              apiTest,
	"auth.test":                             authTest,
	"apps.connections.open":                 appsConnectionsOpen,
	"chat.postMessage":                      chatPostMessage,
	"chat.update":                           chatUpdate,
	"chat.delete":                           chatDelete,
	"chat.postEphemeral":                    chatPostEphemeral,
	"chat.startStream":                      chatStartStream,
	"chat.appendStream":                     chatAppendStream,
	"chat.stopStream":                       chatStopStream,
	"conversations.replies":                 conversationsReplies,
	"conversations.history":                 conversationsHistory,
	"conversations.info":                    conversationsInfo,
	"users.info":                            usersInfo,
	"assistant.threads.setStatus":           assistantSetStatus,
	"assistant.threads.setSuggestedPrompts": assistantSetPrompts,
	"assistant.threads.setTitle":            assistantSetTitle,
	"reactions.add":                         reactionsAdd,
	"reactions.remove":                      reactionsRemove,
}

// Methods that take the app-level token; every other one takes the bot token.
var appTokenMethods = map[string]bool{"apps.connections.open": true}

func (e apiError) Error() string { return string(e) }

func (s *Server) handleAPI(w http.ResponseWriter, r *http.Request) {
	method := strings.TrimPrefix(r.URL.Path, "/api/")
	p, err := parseParams(r)
	if err != nil {
		writeJSON(w, http.StatusOK, map[string]any{"ok": false, "error": "invalid_form_data"})
		return
	}
	s.mu.Lock()
	s.calls[method]++
	var fault *Fault
	if f := s.faults[method]; f != nil {
		ff := *f
		fault = &ff
		if f.Count > 0 {
			f.Count--
			if f.Count == 0 {
				delete(s.faults, method)
			}
		}
	}
	s.mu.Unlock()

	if fault != nil {
		if fault.Delay > 0 {
			t := time.NewTimer(fault.Delay)
			select {
			case <-t.C:
			case <-r.Context().Done():
				t.Stop()
				return
			case <-s.done:
				t.Stop()
				return
			}
		}
		switch {
		case fault.Status == http.StatusTooManyRequests:
			w.Header().Set("Retry-After", strconv.Itoa(max(fault.RetryAfter, 1)))
			writeJSON(w, http.StatusTooManyRequests, map[string]any{"ok": false, "error": "ratelimited"})
			return
		case fault.Status != 0 && fault.Status != http.StatusOK:
			w.Header().Set("Content-Type", "text/html")
			w.WriteHeader(fault.Status)
			_, _ = fmt.Fprintf(w, "<html><body><h1>%d %s</h1></body></html>", fault.Status, http.StatusText(fault.Status))
			return
		case fault.Error != "":
			writeJSON(w, http.StatusOK, map[string]any{"ok": false, "error": fault.Error})
			return
		}
	}

	h, ok := handlers[method]
	if !ok {
		writeJSON(w, http.StatusOK, map[string]any{"ok": false, "error": "unknown_method"})
		return
	}
	c := &call{method: method, p: p}
	if err := s.authenticate(c, r); err != nil {
		writeJSON(w, http.StatusOK, map[string]any{"ok": false, "error": err.Error()})
		return
	}
	if retry := s.rateLimit(c); retry > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(retry))
		writeJSON(w, http.StatusTooManyRequests, map[string]any{"ok": false, "error": "ratelimited"})
		return
	}
	resp, err := h(s, c)
	if err != nil {
		writeJSON(w, http.StatusOK, map[string]any{"ok": false, "error": err.Error()})
		return
	}
	resp["ok"] = true
	writeJSON(w, http.StatusOK, resp)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// parseParams accepts form bodies, query strings and JSON bodies (scalars as
// strings, objects and arrays as their JSON text, like Slack reads them).
func parseParams(r *http.Request) (url.Values, error) {
	ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if ct == "application/json" {
		body, err := io.ReadAll(io.LimitReader(r.Body, 8<<20))
		if err != nil {
			return nil, err
		}
		v := r.URL.Query()
		if len(strings.TrimSpace(string(body))) == 0 {
			return v, nil
		}
		var m map[string]json.RawMessage
		if err := json.Unmarshal(body, &m); err != nil {
			return nil, err
		}
		for k, raw := range m {
			var str string
			if json.Unmarshal(raw, &str) == nil {
				v.Set(k, str)
				continue
			}
			if string(raw) == "null" {
				continue
			}
			v.Set(k, string(raw))
		}
		return v, nil
	}
	r.Body = http.MaxBytesReader(nil, r.Body, 8<<20)
	if err := r.ParseMultipartForm(8 << 20); err != nil && !errors.Is(err, http.ErrNotMultipart) {
		if err := r.ParseForm(); err != nil {
			return nil, err
		}
	}
	return r.Form, nil
}

func (s *Server) authenticate(c *call, r *http.Request) error {
	tok := c.get("token")
	if h := r.Header.Get("Authorization"); tok == "" && strings.HasPrefix(h, "Bearer ") {
		tok = strings.TrimSpace(strings.TrimPrefix(h, "Bearer "))
	}
	if c.method == "api.test" {
		return nil
	}
	if tok == "" {
		return apiError("not_authed")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	ti := s.tokens[tok]
	switch {
	case ti == nil:
		return apiError("invalid_auth")
	case ti.revoked:
		return apiError("token_revoked")
	case appTokenMethods[c.method] != (ti.kind == appToken):
		return apiError("not_allowed_token_type")
	}
	c.tok = ti
	c.w = s.workspaces[ti.team]
	if c.w == nil {
		return apiError("invalid_auth")
	}
	return nil
}

// Response shapes.

func apiTest(_ *Server, c *call) (map[string]any, error) {
	args := map[string]any{}
	for k := range c.p {
		if k != "token" {
			args[k] = c.p.Get(k)
		}
	}
	return map[string]any{"args": args}, nil
}

func authTest(s *Server, c *call) (map[string]any, error) {
	sp := c.w.spec
	return map[string]any{
		"url":                   "https://" + slug(sp.TeamName) + ".slack.com/",
		"team":                  sp.TeamName,
		"user":                  sp.BotName,
		"team_id":               sp.TeamID,
		"user_id":               sp.BotUserID,
		"bot_id":                sp.BotID,
		"enterprise_id":         nilIfEmpty(sp.EnterpriseID),
		"is_enterprise_install": false,
	}, nil
}

func slug(name string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(name) {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' {
			b.WriteRune(r)
		} else if b.Len() > 0 {
			b.WriteByte('-')
		}
	}
	return strings.Trim(b.String(), "-")
}

func appsConnectionsOpen(s *Server, c *call) (map[string]any, error) {
	tk := randHex(16)
	s.mu.Lock()
	s.tickets[tk] = ticket{appID: c.tok.appID, expires: time.Now().Add(ticketTTL)}
	s.mu.Unlock()
	return map[string]any{"url": s.wsURL() + "link/?ticket=" + tk + "&app_id=" + c.tok.appID}, nil
}

// channelLocked resolves a channel id for the caller's workspace; a user id
// (U…/W…) opens the DM with that user, like chat.postMessage does.
func (c *call) channelLocked(id string) (*channel, error) {
	if id == "" {
		return nil, apiError("channel_not_found")
	}
	if ch := c.w.channels[id]; ch != nil {
		return ch, nil
	}
	if _, ok := c.w.users[id]; ok && (id[0] == 'U' || id[0] == 'W') {
		return c.w.dmLocked(id), nil
	}
	return nil, apiError("channel_not_found")
}

// validateContent applies Slack's text and block limits.
func validateContent(text, blocks string) (json.RawMessage, error) {
	if utf8.RuneCountInString(text) > maxTextChars {
		return nil, apiError("msg_too_long")
	}
	if blocks == "" {
		return nil, nil
	}
	var bl []map[string]any
	if err := json.Unmarshal([]byte(blocks), &bl); err != nil {
		return nil, apiError("invalid_blocks_format")
	}
	if len(bl) > 50 {
		return nil, apiError("invalid_blocks")
	}
	for _, b := range bl {
		typ, _ := b["type"].(string)
		if typ == "" {
			return nil, apiError("invalid_blocks")
		}
		switch typ {
		case "markdown":
			t, _ := b["text"].(string)
			if t == "" || utf8.RuneCountInString(t) > maxMarkdownChars {
				return nil, apiError("invalid_blocks")
			}
		case "section":
			if tx, ok := b["text"].(map[string]any); ok {
				t, _ := tx["text"].(string)
				if utf8.RuneCountInString(t) > maxSectionChars {
					return nil, apiError("invalid_blocks")
				}
			}
		}
	}
	return json.RawMessage(blocks), nil
}

// blocksText is the fallback text Slack derives when only blocks are given.
func blocksText(blocks json.RawMessage) string {
	var bl []map[string]any
	_ = json.Unmarshal(blocks, &bl)
	var parts []string
	for _, b := range bl {
		switch t := b["text"].(type) {
		case string:
			parts = append(parts, t)
		case map[string]any:
			if x, ok := t["text"].(string); ok {
				parts = append(parts, x)
			}
		}
	}
	return strings.Join(parts, "\n")
}

func chatPostMessage(s *Server, c *call) (map[string]any, error) {
	text := c.get("text")
	if text == "" && c.get("markdown_text") != "" {
		text = c.get("markdown_text")
	}
	blocks, err := validateContent(text, c.get("blocks"))
	if err != nil {
		return nil, err
	}
	if text == "" && blocks == nil && c.get("attachments") == "" {
		return nil, apiError("no_text")
	}
	s.mu.Lock()
	ch, err := c.channelLocked(c.get("channel"))
	if err != nil {
		s.mu.Unlock()
		return nil, err
	}
	threadTS, err := c.threadLocked(ch)
	if err != nil {
		s.mu.Unlock()
		return nil, err
	}
	m := s.botPostLocked(c.w, ch, text, blocks, threadTS, false)
	out := s.messageJSONLocked(c.w, ch, m)
	echo := s.echoLocked(c.w, ch, m)
	hooks := s.onBotMsg
	s.mu.Unlock()
	s.afterBotWrite(hooks, c.w.spec.TeamID, ch.id, m.threadTS, m.ts, c.method)
	s.emitAll(echo)
	return map[string]any{"channel": ch.id, "ts": m.ts, "message": out}, nil
}

// botPostLocked stores a new bot message. Caller holds s.mu.
func (s *Server) botPostLocked(w *workspace, ch *channel, text string, blocks json.RawMessage, threadTS string, streaming bool) *message {
	if text == "" && blocks != nil {
		text = blocksText(blocks)
	}
	m := &message{
		ts: s.nextTSLocked(), threadTS: threadTS,
		user: w.spec.BotUserID, botID: w.spec.BotID, appID: w.spec.AppID,
		text: text, blocks: blocks, isBot: true, streaming: streaming,
	}
	ch.msgs[m.ts] = m
	if threadTS != "" {
		root := ch.msgs[threadTS]
		root.replies = append(root.replies, m.ts)
		if root.replyUsers == nil {
			root.replyUsers = map[string]bool{}
		}
		root.replyUsers[m.user] = true
		delete(ch.status, threadTS) // Slack clears the assistant status when the app replies
	}
	s.notifyLocked()
	return m
}

// threadLocked maps the call's thread_ts to its thread's root, which must
// still be there; "" when the call names no thread.
func (c *call) threadLocked(ch *channel) (string, error) {
	threadTS := ch.threadRoot(c.get("thread_ts"))
	if threadTS != "" {
		if root := ch.msgs[threadTS]; root == nil || root.deleted {
			return "", apiError("thread_not_found")
		}
	}
	return threadTS, nil
}

// botMessageLocked finds the channel and the message the call names
// (channel, ts), a message the bot may change.
func (c *call) botMessageLocked(denied apiError) (*channel, *message, error) {
	ch, err := c.channelLocked(c.get("channel"))
	if err != nil {
		return nil, nil, err
	}
	m := ch.msgs[c.get("ts")]
	if m == nil || m.deleted {
		return nil, nil, apiError("message_not_found")
	}
	if !m.isBot || m.botID != c.w.spec.BotID {
		return nil, nil, denied
	}
	return ch, m, nil
}

func chatUpdate(s *Server, c *call) (map[string]any, error) {
	text := c.get("text")
	blocks, err := validateContent(text, c.get("blocks"))
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	ch, m, err := c.botMessageLocked("cant_update_message")
	if err != nil {
		s.mu.Unlock()
		return nil, err
	}
	prev := s.messageJSONLocked(c.w, ch, m)
	if c.p.Has("blocks") {
		m.blocks = blocks
	}
	if c.p.Has("text") || blocks != nil {
		m.text = text
		if text == "" {
			m.text = blocksText(m.blocks)
		}
	}
	m.updates++
	now := s.nextTSLocked()
	m.edited = &edited{User: m.user, TS: now}
	s.notifyLocked()
	out := s.messageJSONLocked(c.w, ch, m)
	var echo []pendingEvent
	if s.botEcho {
		echo = []pendingEvent{{c.w.spec, c.w.verif, changedEvent(ch, out, prev, now)}}
	}
	hooks := s.onBotMsg
	s.mu.Unlock()
	s.afterBotWrite(hooks, c.w.spec.TeamID, ch.id, m.threadTS, m.ts, c.method)
	s.emitAll(echo)
	return map[string]any{"channel": ch.id, "ts": m.ts, "text": m.text, "message": out}, nil
}

func chatDelete(s *Server, c *call) (map[string]any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ch, m, err := c.botMessageLocked("cant_delete_message")
	if err != nil {
		return nil, err
	}
	m.deleted = true
	s.notifyLocked()
	return map[string]any{"channel": ch.id, "ts": m.ts}, nil
}

func chatPostEphemeral(s *Server, c *call) (map[string]any, error) {
	text := c.get("text")
	if _, err := validateContent(text, c.get("blocks")); err != nil {
		return nil, err
	}
	if text == "" && c.get("blocks") == "" {
		return nil, apiError("no_text")
	}
	s.mu.Lock()
	ch, err := c.channelLocked(c.get("channel"))
	if err != nil {
		s.mu.Unlock()
		return nil, err
	}
	u := c.get("user")
	if _, ok := c.w.users[u]; !ok {
		s.mu.Unlock()
		return nil, apiError("user_not_found")
	}
	if text == "" {
		text = blocksText(json.RawMessage(c.get("blocks")))
	}
	th := c.get("thread_ts")
	if ch.ephem[th] == nil {
		ch.ephem[th] = map[string][]string{}
	}
	ch.ephem[th][u] = append(ch.ephem[th][u], text)
	ts := s.nextTSLocked()
	s.notifyLocked()
	hooks := s.onBotMsg
	s.mu.Unlock()
	s.afterBotWrite(hooks, c.w.spec.TeamID, ch.id, th, ts, c.method)
	return map[string]any{"message_ts": ts}, nil
}

func chatStartStream(s *Server, c *call) (map[string]any, error) {
	md := c.get("markdown_text")
	if utf8.RuneCountInString(md) > maxMarkdownChars {
		return nil, apiError("msg_too_long")
	}
	s.mu.Lock()
	ch, err := c.channelLocked(c.get("channel"))
	if err != nil {
		s.mu.Unlock()
		return nil, err
	}
	if !ch.im {
		// Outside DMs Slack needs to know whom the stream is for.
		if c.get("recipient_user_id") == "" {
			s.mu.Unlock()
			return nil, apiError("missing_recipient_user_id")
		}
		if c.get("recipient_team_id") == "" {
			s.mu.Unlock()
			return nil, apiError("missing_recipient_team_id")
		}
	}
	threadTS, err := c.threadLocked(ch)
	if err != nil {
		s.mu.Unlock()
		return nil, err
	}
	m := s.botPostLocked(c.w, ch, md, nil, threadTS, true)
	echo := s.echoLocked(c.w, ch, m)
	hooks := s.onBotMsg
	s.mu.Unlock()
	s.afterBotWrite(hooks, c.w.spec.TeamID, ch.id, m.threadTS, m.ts, c.method)
	s.emitAll(echo)
	return map[string]any{"channel": ch.id, "ts": m.ts}, nil
}

func chatAppendStream(s *Server, c *call) (map[string]any, error) {
	return streamWrite(s, c, false)
}

func chatStopStream(s *Server, c *call) (map[string]any, error) {
	return streamWrite(s, c, true)
}

func streamWrite(s *Server, c *call, stop bool) (map[string]any, error) {
	md := c.get("markdown_text")
	if utf8.RuneCountInString(md) > maxMarkdownChars {
		return nil, apiError("msg_too_long")
	}
	if !stop && md == "" {
		return nil, apiError("invalid_arguments")
	}
	blocks, err := validateContent("", c.get("blocks"))
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	ch, m, err := c.botMessageLocked("cant_update_message")
	if err != nil {
		s.mu.Unlock()
		return nil, err
	}
	if !m.streaming {
		s.mu.Unlock()
		return nil, apiError("message_not_in_streaming_state")
	}
	if utf8.RuneCountInString(m.text)+utf8.RuneCountInString(md) > maxTextChars {
		s.mu.Unlock()
		return nil, apiError("msg_too_long")
	}
	m.text += md
	m.updates++
	if stop {
		m.streaming = false
		if blocks != nil {
			m.blocks = blocks
		}
	}
	s.notifyLocked()
	hooks := s.onBotMsg
	s.mu.Unlock()
	s.afterBotWrite(hooks, c.w.spec.TeamID, ch.id, m.threadTS, m.ts, c.method)
	return map[string]any{"channel": ch.id, "ts": m.ts}, nil
}

func (s *Server) afterBotWrite(hooks []func(teamID, channelID, threadTS, ts, method string, at time.Time), team, channel, threadTS, ts, method string) {
	at := time.Now()
	for _, h := range hooks {
		h(team, channel, threadTS, ts, method, at)
	}
}

// threadRoot maps a reply's ts to its parent's, as Slack does for thread_ts.
func (ch *channel) threadRoot(ts string) string {
	if m := ch.msgs[ts]; m != nil && m.threadTS != "" {
		return m.threadTS
	}
	return ts
}

// replies in thread order: root, then replies; deleted messages are gone.
func (ch *channel) threadLocked(ts string) []*message {
	root := ch.msgs[ts]
	if root == nil {
		return nil
	}
	if root.threadTS != "" && root.threadTS != root.ts {
		// A reply's ts returns just that reply, like Slack.
		if root.deleted {
			return nil
		}
		return []*message{root}
	}
	var out []*message
	if !root.deleted {
		out = append(out, root)
	}
	for _, r := range root.replies {
		if m := ch.msgs[r]; m != nil && !m.deleted {
			out = append(out, m)
		}
	}
	return out
}

func conversationsReplies(s *Server, c *call) (map[string]any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ch, err := c.channelLocked(c.get("channel"))
	if err != nil {
		return nil, err
	}
	msgs := ch.threadLocked(c.get("ts"))
	if len(msgs) == 0 {
		return nil, apiError("thread_not_found")
	}
	msgs = filterRange(msgs, c.get("oldest"), c.get("latest"), c.get("inclusive") == "1" || c.get("inclusive") == "true", true)
	return s.page(c, ch, msgs)
}

func conversationsHistory(s *Server, c *call) (map[string]any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ch, err := c.channelLocked(c.get("channel"))
	if err != nil {
		return nil, err
	}
	var msgs []*message
	for _, m := range ch.msgs {
		if !m.deleted && (m.threadTS == "" || m.threadTS == m.ts) {
			msgs = append(msgs, m)
		}
	}
	sort.Slice(msgs, func(i, j int) bool { return msgs[i].ts > msgs[j].ts }) // newest first
	msgs = filterRange(msgs, c.get("oldest"), c.get("latest"), c.get("inclusive") == "1" || c.get("inclusive") == "true", false)
	return s.page(c, ch, msgs)
}

func filterRange(msgs []*message, oldest, latest string, inclusive, keepFirst bool) []*message {
	if oldest == "" && latest == "" {
		return msgs
	}
	o, _ := strconv.ParseFloat(oldest, 64)
	l := math.Inf(1)
	if latest != "" {
		l, _ = strconv.ParseFloat(latest, 64)
	}
	var out []*message
	for i, m := range msgs {
		t, _ := strconv.ParseFloat(m.ts, 64)
		in := t > o && t < l || inclusive && (t == o || t == l)
		if keepFirst && i == 0 {
			in = true // conversations.replies always includes the parent
		}
		if in {
			out = append(out, m)
		}
	}
	return out
}

// page applies limit/cursor pagination. Cursors are opaque base64 offsets.
func (s *Server) page(c *call, ch *channel, msgs []*message) (map[string]any, error) {
	limit := 1000
	if l, err := strconv.Atoi(c.get("limit")); err == nil && l > 0 {
		limit = min(l, 1000)
	}
	off := 0
	if cur := c.get("cursor"); cur != "" {
		b, err := base64.StdEncoding.DecodeString(cur)
		if err != nil || !strings.HasPrefix(string(b), "next_offset:") {
			return nil, apiError("invalid_cursor")
		}
		off, err = strconv.Atoi(strings.TrimPrefix(string(b), "next_offset:"))
		if err != nil || off < 0 || off > len(msgs) {
			return nil, apiError("invalid_cursor")
		}
	}
	end := min(off+limit, len(msgs))
	out := make([]map[string]any, 0, end-off)
	for _, m := range msgs[off:end] {
		out = append(out, s.messageJSONLocked(c.w, ch, m))
	}
	resp := map[string]any{"messages": out, "has_more": end < len(msgs)}
	if end < len(msgs) {
		resp["response_metadata"] = map[string]any{
			"next_cursor": base64.StdEncoding.EncodeToString(fmt.Appendf(nil, "next_offset:%d", end)),
		}
	} else {
		resp["response_metadata"] = map[string]any{"next_cursor": ""}
	}
	return resp, nil
}

// messageJSONLocked renders a message as the Web API returns it.
func (s *Server) messageJSONLocked(w *workspace, ch *channel, m *message) map[string]any {
	out := map[string]any{"type": "message", "ts": m.ts, "text": m.text}
	if m.user != "" {
		out["user"] = m.user
	}
	if m.subtype != "" {
		out["subtype"] = m.subtype
	}
	if m.botID != "" {
		out["bot_id"] = m.botID
		if m.isBot {
			out["app_id"] = m.appID
			out["bot_profile"] = map[string]any{"id": m.botID, "app_id": m.appID, "name": w.spec.BotName, "team_id": w.spec.TeamID, "deleted": false}
		}
	}
	if m.username != "" {
		out["username"] = m.username
	}
	if m.user != "" && !m.isBot {
		out["team"] = w.spec.TeamID
	}
	if m.blocks != nil {
		out["blocks"] = m.blocks
	}
	if m.threadTS != "" {
		out["thread_ts"] = m.threadTS
		if m.threadTS != m.ts {
			if root := ch.msgs[m.threadTS]; root != nil && root.user != "" {
				out["parent_user_id"] = root.user
			}
		}
	}
	if len(m.replies) > 0 {
		live := 0
		var latest string
		for _, r := range m.replies {
			if x := ch.msgs[r]; x != nil && !x.deleted {
				live++
				latest = r
			}
		}
		users := make([]string, 0, len(m.replyUsers))
		for u := range m.replyUsers {
			users = append(users, u)
		}
		sort.Strings(users)
		out["thread_ts"] = m.ts
		out["reply_count"] = live
		out["reply_users_count"] = len(users)
		out["reply_users"] = users
		out["latest_reply"] = latest
		out["is_locked"] = false
		out["subscribed"] = false
	}
	if m.edited != nil {
		out["edited"] = map[string]any{"user": m.edited.User, "ts": m.edited.TS}
	}
	if len(m.reactions) > 0 {
		names := make([]string, 0, len(m.reactions))
		for n := range m.reactions {
			names = append(names, n)
		}
		sort.Strings(names)
		var rs []map[string]any
		for _, n := range names {
			rs = append(rs, map[string]any{"name": n, "users": m.reactions[n], "count": len(m.reactions[n])})
		}
		out["reactions"] = rs
	}
	return out
}

func conversationsInfo(s *Server, c *call) (map[string]any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ch := c.w.channels[c.get("channel")]
	if ch == nil {
		return nil, apiError("channel_not_found")
	}
	info := map[string]any{
		"id":              ch.id,
		"created":         ch.created,
		"is_archived":     false,
		"is_im":           ch.im,
		"is_org_shared":   false,
		"context_team_id": c.w.spec.TeamID,
	}
	if ch.im {
		info["user"] = ch.imUser
		info["is_user_deleted"] = false
	} else {
		info["name"] = ch.name
		info["name_normalized"] = ch.name
		info["is_channel"] = !ch.private
		info["is_group"] = ch.private
		info["is_private"] = ch.private
		info["is_member"] = true
		info["is_general"] = ch.name == "general"
		info["is_mpim"] = false
		info["topic"] = map[string]any{"value": "", "creator": "", "last_set": 0}
		info["purpose"] = map[string]any{"value": "", "creator": "", "last_set": 0}
	}
	return map[string]any{"channel": info}, nil
}

func usersInfo(s *Server, c *call) (map[string]any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	u := c.w.users[c.get("user")]
	if u == nil {
		return nil, apiError("user_not_found")
	}
	profile := map[string]any{
		"real_name": u.RealName, "display_name": u.Name,
		"real_name_normalized": u.RealName, "display_name_normalized": u.Name,
		"team": c.w.spec.TeamID,
	}
	if u.IsBot {
		profile["bot_id"] = u.BotID
	}
	return map[string]any{"user": map[string]any{
		"id": u.ID, "team_id": c.w.spec.TeamID, "name": u.Name, "real_name": u.RealName,
		"deleted": false, "is_bot": u.IsBot, "is_app_user": false,
		"tz": "Europe/Paris", "tz_label": "Central European Time", "tz_offset": 3600,
		"profile": profile, "updated": time.Now().Unix(),
	}}, nil
}

// assistantThread resolves channel_id + thread_ts for the assistant.threads.* methods.
func (c *call) assistantThreadLocked() (*channel, string, error) {
	ch, err := c.channelLocked(c.get("channel_id"))
	if err != nil {
		return nil, "", err
	}
	th := c.get("thread_ts")
	if th == "" {
		return nil, "", apiError("invalid_arguments")
	}
	if ch.msgs[th] == nil {
		return nil, "", apiError("thread_not_found")
	}
	return ch, th, nil
}

func assistantSetStatus(s *Server, c *call) (map[string]any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ch, th, err := c.assistantThreadLocked()
	if err != nil {
		return nil, err
	}
	if st := c.get("status"); st == "" {
		delete(ch.status, th)
	} else {
		ch.status[th] = assistantStatus{text: st, at: time.Now()}
	}
	s.notifyLocked()
	return map[string]any{}, nil
}

func assistantSetPrompts(s *Server, c *call) (map[string]any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, _, err := c.assistantThreadLocked(); err != nil {
		return nil, err
	}
	var prompts []map[string]any
	if err := json.Unmarshal([]byte(c.get("prompts")), &prompts); err != nil || len(prompts) == 0 || len(prompts) > 4 {
		return nil, apiError("invalid_arguments")
	}
	return map[string]any{}, nil
}

func assistantSetTitle(s *Server, c *call) (map[string]any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ch, th, err := c.assistantThreadLocked()
	if err != nil {
		return nil, err
	}
	ch.titles[th] = c.get("title")
	return map[string]any{}, nil
}

func reactionsAdd(s *Server, c *call) (map[string]any, error) {
	return react(s, c, true)
}

func reactionsRemove(s *Server, c *call) (map[string]any, error) {
	return react(s, c, false)
}

func react(s *Server, c *call, add bool) (map[string]any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ch, err := c.channelLocked(c.get("channel"))
	if err != nil {
		return nil, err
	}
	m := ch.msgs[c.get("timestamp")]
	if m == nil || m.deleted {
		return nil, apiError("message_not_found")
	}
	name := strings.Trim(c.get("name"), ":")
	if name == "" {
		return nil, apiError("invalid_name")
	}
	me := c.w.spec.BotUserID
	users := m.reactions[name]
	idx := -1
	for i, u := range users {
		if u == me {
			idx = i
		}
	}
	switch {
	case add && idx >= 0:
		return nil, apiError("already_reacted")
	case !add && idx < 0:
		return nil, apiError("no_reaction")
	case add:
		if m.reactions == nil {
			m.reactions = map[string][]string{}
		}
		m.reactions[name] = append(users, me)
	default:
		m.reactions[name] = append(users[:idx], users[idx+1:]...)
		if len(m.reactions[name]) == 0 {
			delete(m.reactions, name)
		}
	}
	s.notifyLocked()
	return map[string]any{}, nil
}
