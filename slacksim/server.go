package slacksim

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
)

// Limits Slack enforces that the emulator reproduces.
const (
	maxConnsPerApp   = 10    // an 11th socket gets too_many_websockets
	maxAckBytes      = 20480 // Slack drops socket responses of this size or more
	maxTextChars     = 40000 // chat.postMessage text above this → msg_too_long
	maxMarkdownChars = 12000 // markdown block / markdown_text limit
	maxSectionChars  = 3000  // section block text limit
	maxRetries       = 3     // redeliveries of an unacked envelope
	ticketTTL        = time.Minute
	statusTTL        = 2 * time.Minute // assistant status auto-clears
)

// Server is an in-process Slack: Web API over HTTP, Socket Mode over a real
// websocket, and drivers that act as humans. Create it with New, then Start.
type Server struct {
	log          *slog.Logger
	pingInterval time.Duration
	ackTimeout   time.Duration
	rateLimits   bool
	seed         bool
	botEcho      bool
	graceClose   time.Duration

	upgrader websocket.Upgrader

	// mu guards the Slack state below. It is never held while writing to a socket.
	mu         sync.Mutex
	workspaces map[string]*workspace // by team id
	wsOrder    []string
	apps       map[string]*app       // by app id
	tokens     map[string]*tokenInfo // by token
	tickets    map[string]ticket     // single-use websocket tickets
	lastTS     int64                 // micros of the last issued message ts
	changed    chan struct{}         // closed and replaced on every state change
	calls      map[string]int        // Web API calls by method
	faults     map[string]*Fault     // injected faults by method
	buckets    map[string]*bucket    // rate limit buckets
	onAck      []func(EnvelopeStat)
	onBotMsg   []func(teamID, channelID, threadTS, ts, method string, at time.Time)

	// statsMu guards envelope statistics (hot path, kept apart from mu).
	statsMu sync.Mutex
	stats   []*EnvelopeStat
	unacked atomic.Int64

	// lifecycle
	lifeMu   sync.Mutex
	started  bool
	closed   bool
	done     chan struct{}
	wg       sync.WaitGroup
	listener net.Listener
	http     *http.Server
	baseURL  string
	connSeq  atomic.Int64
}

// Option configures a Server.
type Option func(*Server)

// WithLogger sets the logger (default: discard).
func WithLogger(l *slog.Logger) Option { return func(s *Server) { s.log = l } }

// WithPingInterval sets how often the server PINGs every socket (default 5 s;
// slack-go reconnects when it hears none for 30 s).
func WithPingInterval(d time.Duration) Option { return func(s *Server) { s.pingInterval = d } }

// WithAckTimeout sets how long an envelope may stay unacked before it is
// redelivered (default 3 s, like Slack).
func WithAckTimeout(d time.Duration) Option { return func(s *Server) { s.ackTimeout = d } }

// WithRateLimits turns Slack's per-method rate limits on or off (default on).
func WithRateLimits(on bool) Option { return func(s *Server) { s.rateLimits = on } }

// WithSeed makes Start add one workspace with generated ids and tokens
// (default off; RunStandalone turns it on).
func WithSeed(on bool) Option { return func(s *Server) { s.seed = on } }

// WithBotEcho controls whether the bot's own chat.postMessage / chat.startStream
// posts come back as message events (with bot_id) and its chat.update calls as
// message_changed events, as real Slack does for apps subscribed to
// message.channels / message.im (default on). Benchmarks may turn it off.
func WithBotEcho(on bool) Option { return func(s *Server) { s.botEcho = on } }

// WithDisconnectGrace sets how long a socket stays open after a disconnect
// envelope other than "warning" before the server closes it (default 2 s).
func WithDisconnectGrace(d time.Duration) Option { return func(s *Server) { s.graceClose = d } }

// New returns a Server that is not listening yet.
func New(opts ...Option) *Server {
	s := &Server{
		log:          slog.New(slog.NewTextHandler(io.Discard, nil)),
		pingInterval: 5 * time.Second,
		ackTimeout:   3 * time.Second,
		rateLimits:   true,
		botEcho:      true,
		graceClose:   2 * time.Second,
		workspaces:   map[string]*workspace{},
		apps:         map[string]*app{},
		tokens:       map[string]*tokenInfo{},
		tickets:      map[string]ticket{},
		changed:      make(chan struct{}),
		calls:        map[string]int{},
		faults:       map[string]*Fault{},
		buckets:      map[string]*bucket{},
		done:         make(chan struct{}),
	}
	for _, o := range opts {
		o(s)
	}
	s.upgrader = websocket.Upgrader{
		// slack-go sends Origin: https://api.slack.com.
		CheckOrigin:     func(*http.Request) bool { return true },
		ReadBufferSize:  1024,
		WriteBufferSize: 4096,
	}
	return s
}

// Start listens on addr ("127.0.0.1:0" picks a free port) and serves the Web
// API, the Socket Mode websocket and the control endpoints.
func (s *Server) Start(addr string) error {
	s.lifeMu.Lock()
	defer s.lifeMu.Unlock()
	if s.closed {
		return errors.New("slacksim: server closed")
	}
	if s.started {
		return errors.New("slacksim: server already started")
	}
	ln, err := (&net.ListenConfig{}).Listen(context.Background(), "tcp", addr)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	s.listener = ln
	s.baseURL = "http://" + ln.Addr().String() + "/"
	mux := http.NewServeMux()
	mux.HandleFunc("/api/", s.handleAPI)
	mux.HandleFunc("/link/", s.handleLink)
	mux.HandleFunc("/_sim/", s.handleControl)
	s.http = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	s.started = true
	s.wg.Go(func() {
		if err := s.http.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("slacksim serve", "err", err)
		}
	})
	if s.seed {
		s.AddWorkspace(WorkspaceSpec{TeamName: "Konstruct Demo"})
	}
	s.log.Info("slacksim started", "api_url", s.APIURL())
	return nil
}

// Close closes the listener and every socket, stops redelivery timers and
// waits for the server's goroutines. It is idempotent.
func (s *Server) Close() error {
	s.lifeMu.Lock()
	if s.closed {
		s.lifeMu.Unlock()
		return nil
	}
	s.closed = true
	close(s.done)
	s.lifeMu.Unlock()

	var err error
	if s.http != nil {
		err = s.http.Close()
	}
	s.mu.Lock()
	apps := make([]*app, 0, len(s.apps))
	for _, a := range s.apps {
		apps = append(apps, a)
	}
	s.mu.Unlock()
	for _, a := range apps {
		for _, c := range a.closeAll() {
			c.shutdown()
		}
	}
	s.wg.Wait()
	return err
}

// isClosed reports whether Close has begun.
func (s *Server) isClosed() bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}

// goTracked runs f in a goroutine Close waits for; it refuses once closed.
func (s *Server) goTracked(f func()) bool {
	s.lifeMu.Lock()
	defer s.lifeMu.Unlock()
	if s.closed {
		return false
	}
	s.wg.Go(f)
	return true
}

// URL is the server's base URL, "http://127.0.0.1:PORT/".
func (s *Server) URL() string { return s.baseURL }

// APIURL is the Web API base with its trailing slash; methods are APIURL()+"chat.postMessage".
func (s *Server) APIURL() string { return s.baseURL + "api/" }

// wsURL is the websocket base, "ws://127.0.0.1:PORT/".
func (s *Server) wsURL() string { return "ws://" + s.listener.Addr().String() + "/" }

// notifyLocked wakes every WaitThread. Caller holds s.mu.
func (s *Server) notifyLocked() {
	close(s.changed)
	s.changed = make(chan struct{})
}

// Calls reports how many times a Web API method was called (faulted and
// rate-limited calls included).
func (s *Server) Calls(method string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls[method]
}

// OnAck registers a hook called as each ack is read (outside any lock).
func (s *Server) OnAck(f func(EnvelopeStat)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.onAck = append(s.onAck, f)
}

// OnBotMessage registers a hook called on every bot write that changes what a
// person sees: chat.postMessage, chat.update, chat.postEphemeral,
// chat.startStream, chat.appendStream, chat.stopStream.
func (s *Server) OnBotMessage(f func(teamID, channelID, threadTS, ts, method string, at time.Time)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.onBotMsg = append(s.onBotMsg, f)
}
