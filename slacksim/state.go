package slacksim

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"
	"time"
)

// WorkspaceSpec describes one Slack workspace with the app installed in it.
// Zero fields get realistic generated values. Workspaces that share an AppID
// (an app installed in several workspaces) share that app's sockets.
type WorkspaceSpec struct {
	TeamID       string `json:"team_id"`
	TeamName     string `json:"team_name"`
	EnterpriseID string `json:"enterprise_id,omitempty"`
	AppID        string `json:"app_id"`
	BotUserID    string `json:"bot_user_id"`
	BotID        string `json:"bot_id"`
	BotName      string `json:"bot_name"`
	AppToken     string `json:"app_token"`
	BotToken     string `json:"bot_token"`

	// Seeded on AddWorkspace: the public #general channel and two humans.
	GeneralChannelID string   `json:"general_channel_id"`
	UserIDs          []string `json:"user_ids"`
}

type tokenKind int

const (
	appToken tokenKind = iota
	botToken
)

type tokenInfo struct {
	kind    tokenKind
	team    string // bot tokens: their workspace; app tokens: the first one
	appID   string
	revoked bool
}

type ticket struct {
	appID   string
	expires time.Time
}

type workspace struct {
	spec     WorkspaceSpec
	users    map[string]*user
	channels map[string]*channel
	dms      map[string]string // user id → D channel id
	verif    string            // legacy verification token carried in payloads
}

type user struct {
	ID, Name, RealName string
	IsBot              bool
	BotID              string
}

type channel struct {
	id, name string
	private  bool
	im       bool
	imUser   string
	created  int64
	msgs     map[string]*message
	ephem    map[string]map[string][]string // thread ts ("" = channel) → user → texts
	status   map[string]assistantStatus     // thread ts → status
	titles   map[string]string
}

type assistantStatus struct {
	text string
	at   time.Time
}

type message struct {
	ts, threadTS string
	user         string
	botID, appID string
	username     string
	subtype      string
	text         string
	blocks       json.RawMessage
	isBot        bool // posted by the app through the Web API
	updates      int
	streaming    bool
	deleted      bool
	edited       *edited
	replies      []string // root only: reply ts in order
	reactions    map[string][]string
	replyUsers   map[string]bool
}

type edited struct{ User, TS string }

func (c *channel) channelType() string {
	switch {
	case c.im:
		return "im"
	case c.private:
		return "group"
	default:
		return "channel"
	}
}

const idAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"

// newID returns prefix + n random characters of Slack's id alphabet.
func newID(prefix string, n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	for i := range b {
		b[i] = idAlphabet[int(b[i])%len(idAlphabet)]
	}
	return prefix + string(b)
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// newUUID returns a random (v4) UUID, the shape of envelope ids and client_msg_ids.
func newUUID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b)
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

func digits(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	for i := range b {
		b[i] = '0' + b[i]%10
	}
	return string(b)
}

// nextTSLocked returns a fresh, strictly increasing message ts. Caller holds s.mu.
func (s *Server) nextTSLocked() string {
	now := time.Now().UnixMicro()
	if now <= s.lastTS {
		now = s.lastTS + 1
	}
	s.lastTS = now
	return fmt.Sprintf("%d.%06d", now/1e6, now%1e6)
}

// AddWorkspace installs the app in a new workspace and returns the filled
// spec. It seeds #general (public) and two humans (alice, bob).
func (s *Server) AddWorkspace(spec WorkspaceSpec) WorkspaceSpec {
	if spec.TeamID == "" {
		spec.TeamID = newID("T", 10)
	}
	if spec.TeamName == "" {
		spec.TeamName = "Workspace " + spec.TeamID
	}
	if spec.AppID == "" {
		spec.AppID = newID("A", 10)
	}
	if spec.BotUserID == "" {
		spec.BotUserID = newID("U", 10)
	}
	if spec.BotID == "" {
		spec.BotID = newID("B", 10)
	}
	if spec.BotName == "" {
		spec.BotName = "konstruct"
	}
	if spec.AppToken == "" {
		spec.AppToken = "xapp-1-" + spec.AppID + "-" + digits(13) + "-" + randHex(32)
	}
	if spec.BotToken == "" {
		spec.BotToken = "xoxb-" + digits(13) + "-" + digits(13) + "-" + randHex(12)
	}
	if spec.GeneralChannelID == "" {
		spec.GeneralChannelID = newID("C", 10)
	}
	if len(spec.UserIDs) == 0 {
		spec.UserIDs = []string{newID("U", 10), newID("U", 10)}
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	w := &workspace{
		spec:     spec,
		users:    map[string]*user{},
		channels: map[string]*channel{},
		dms:      map[string]string{},
		verif:    randHex(12),
	}
	w.users[spec.BotUserID] = &user{ID: spec.BotUserID, Name: spec.BotName, RealName: spec.BotName, IsBot: true, BotID: spec.BotID}
	for i, id := range spec.UserIDs {
		name := []string{"alice", "bob"}[min(i, 1)]
		if i > 1 {
			name = fmt.Sprintf("user%d", i)
		}
		w.users[id] = &user{ID: id, Name: name, RealName: strings.ToUpper(name[:1]) + name[1:]}
	}
	w.channels[spec.GeneralChannelID] = newChannel(spec.GeneralChannelID, "general", false)
	if _, ok := s.workspaces[spec.TeamID]; !ok {
		s.wsOrder = append(s.wsOrder, spec.TeamID)
	}
	s.workspaces[spec.TeamID] = w
	a := s.apps[spec.AppID]
	if a == nil {
		a = newApp(s, spec.AppID)
		s.apps[spec.AppID] = a
	}
	a.mu.Lock()
	a.removed = false
	a.mu.Unlock()
	if _, ok := s.tokens[spec.AppToken]; !ok {
		s.tokens[spec.AppToken] = &tokenInfo{kind: appToken, team: spec.TeamID, appID: spec.AppID}
	}
	s.tokens[spec.BotToken] = &tokenInfo{kind: botToken, team: spec.TeamID, appID: spec.AppID}
	s.notifyLocked()
	return spec
}

func newChannel(id, name string, private bool) *channel {
	return &channel{
		id: id, name: name, private: private,
		created: time.Now().Unix(),
		msgs:    map[string]*message{},
		ephem:   map[string]map[string][]string{},
		status:  map[string]assistantStatus{},
		titles:  map[string]string{},
	}
}

// Workspaces returns the specs of every workspace, in creation order.
func (s *Server) Workspaces() []WorkspaceSpec {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]WorkspaceSpec, 0, len(s.wsOrder))
	for _, id := range s.wsOrder {
		if w, ok := s.workspaces[id]; ok {
			out = append(out, w.spec)
		}
	}
	return out
}

// AddUser adds a human to a workspace.
func (s *Server) AddUser(teamID, userID, name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if w := s.workspaces[teamID]; w != nil {
		w.users[userID] = &user{ID: userID, Name: name, RealName: name}
	}
}

// AddChannel adds a channel (C… public, or private) to a workspace; the bot is a member.
func (s *Server) AddChannel(teamID, channelID, name string, private bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if w := s.workspaces[teamID]; w != nil {
		if _, ok := w.channels[channelID]; !ok {
			w.channels[channelID] = newChannel(channelID, name, private)
		}
	}
}

// DMChannel returns the id (D…) of the DM between the bot and userID, creating it.
func (s *Server) DMChannel(teamID, userID string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	w := s.workspaces[teamID]
	if w == nil {
		return ""
	}
	return w.dmLocked(userID).id
}

func (w *workspace) dmLocked(userID string) *channel {
	if id, ok := w.dms[userID]; ok {
		return w.channels[id]
	}
	c := newChannel(newID("D", 10), "", false)
	c.im, c.imUser = true, userID
	w.dms[userID] = c.id
	w.channels[c.id] = c
	return c
}

// ensureUserLocked makes sure a driver's user exists (drivers are lenient).
func (w *workspace) ensureUserLocked(userID string) {
	if _, ok := w.users[userID]; !ok {
		w.users[userID] = &user{ID: userID, Name: strings.ToLower(userID), RealName: userID}
	}
}

// RevokeToken revokes a token: API calls answer token_revoked, and the app's
// sockets are told link_disabled when it is an app-level token.
func (s *Server) RevokeToken(token string) {
	s.mu.Lock()
	ti := s.tokens[token]
	var a *app
	if ti != nil {
		ti.revoked = true
		if ti.kind == appToken {
			a = s.apps[ti.appID]
		}
	}
	s.mu.Unlock()
	if a != nil {
		s.Disconnect(a.id, "link_disabled")
	}
}

// RemoveApp uninstalls an app everywhere: its tokens become invalid_auth, its
// sockets get a link_disabled disconnect and are closed.
func (s *Server) RemoveApp(appID string) {
	s.mu.Lock()
	for tok, ti := range s.tokens {
		if ti.appID == appID {
			delete(s.tokens, tok)
		}
	}
	a := s.apps[appID]
	s.mu.Unlock()
	if a != nil {
		a.mu.Lock()
		a.removed = true
		a.mu.Unlock()
		s.Disconnect(appID, "link_disabled")
	}
}
