package main

import (
	"bufio"
	"cmp"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"regexp"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/konstruct/konstruct"
	"github.com/konstruct/konstruct/bot"
	"github.com/konstruct/konstruct/config"
	"github.com/konstruct/konstruct/llm"
	"github.com/konstruct/konstruct/llm/llmfake"
	"github.com/konstruct/konstruct/migrations"
	"github.com/konstruct/konstruct/queue"
	"github.com/konstruct/konstruct/slacksim"
	"github.com/konstruct/konstruct/store"
)

func init() { commands = append(commands, newDemoCmd) }

type demoOptions struct {
	llmMode  string // "config" | "echo"
	adminURL string
	redisURL string
	user     string
	timeout  time.Duration
}

func newDemoCmd(a *app) *cobra.Command {
	var o demoOptions
	cmd := &cobra.Command{
		Use:   "demo [--llm=config|echo]",
		Short: "Run Konstruct end to end against the built-in Slack emulator, with a terminal chat",
		Long: "Starts an in-process Slack emulator, creates a private database (dropped on exit), seeds a tenant,\n" +
			"an agent and a workspace, runs the daemon against them, and opens a terminal chat: you type as a\n" +
			"Slack user and watch the answer stream into the thread. The LLM comes from the config (llm.base_url,\n" +
			"llm.model); --llm=echo uses an offline stand-in whose answers say they are canned.\n" +
			"Input that is not a terminal is read as a script, one message per line (for tests).",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.demo(cmd, o)
		},
	}
	cmd.Flags().StringVar(&o.llmMode, "llm", "config", "config: the LLM from the config; echo: an offline stand-in with canned answers")
	cmd.Flags().StringVar(&o.adminURL, "admin-url", "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable", "PostgreSQL URL allowed to create a database and roles (for the demo's private database)")
	cmd.Flags().StringVar(&o.redisURL, "redis-url", "", "Redis for the demo (default: redis.url); its keys get a private prefix, deleted on exit")
	cmd.Flags().StringVar(&o.user, "as", "alice", "the Slack user you type as")
	cmd.Flags().DurationVar(&o.timeout, "answer-timeout", 0, "how long to wait for one answer (default: llm.timeouts.total + 10s)")
	return cmd
}

// Every demo's database, roles and Redis keys are named after it, so that
// a later demo can remove what a killed one left behind.
const (
	demoDBPrefix = "konstruct_demo_"
	demoRedisKey = "demo:" // + the same 8 hex digits + ":"
)

var demoRedisPrefix = regexp.MustCompile(`^demo:[0-9a-f]{8}:`)

func (a *app) demo(cmd *cobra.Command, o demoOptions) (err error) {
	// A closed pipe (`konstruct demo | head`) ends the demo like /quit,
	// with its cleanup, instead of killing the process mid-way.
	ctx, cancel := context.WithCancel(cmd.Context())
	defer cancel()
	sigpipe := make(chan os.Signal, 1)
	signal.Notify(sigpipe, syscall.SIGPIPE)
	defer signal.Stop(sigpipe)
	var piped atomic.Bool
	go func() {
		select {
		case <-sigpipe:
			piped.Store(true)
			cancel()
		case <-ctx.Done():
		}
	}()
	defer func() {
		if piped.Load() {
			err = nil // nobody reads the output any more: not a failure
		}
	}()

	cfg, err := config.Load(config.Options{Path: a.configPath, Getenv: a.getenv, Flags: cmd.Flags()})
	if err != nil {
		return err
	}
	if o.llmMode != "config" && o.llmMode != "echo" {
		return fmt.Errorf("demo: --llm must be config or echo, got %q", o.llmMode)
	}
	// The demo's logs go to a file-like sink so they don't garble the chat;
	// warnings and errors still reach stderr.
	a.setLogger(newLogger(a.stderr, "text", "warn"))
	out := a.stdout
	say := func(format string, args ...any) { fmt.Fprintf(out, "▸ "+format+"\n", args...) }

	// 1. Slack, emulated in process.
	sim := slacksim.New()
	if err := sim.Start("127.0.0.1:0"); err != nil {
		return fmt.Errorf("demo: start the Slack emulator: %w", err)
	}
	defer sim.Close()
	ws := sim.AddWorkspace(slacksim.WorkspaceSpec{TeamName: "Demo Co", BotName: "mara"})
	sim.AddUser(ws.TeamID, o.user, o.user)
	channel := ws.GeneralChannelID
	say("Slack emulator at %s (team %s, #general)", sim.URL(), ws.TeamID)

	// 2. A private database with an owner and a non-superuser runtime
	// role, named and held for this run; first, what killed demos left.
	suffix := randomHex(4)
	release, err := store.HoldScratch(ctx, o.adminURL, demoDBPrefix+suffix)
	if err != nil {
		return fmt.Errorf("demo: create the demo database (is PostgreSQL running? `make services`): %w", err)
	}
	defer release()
	a.reapDemos(ctx, cmp.Or(o.redisURL, cfg.Redis.URL), o.adminURL, say)
	db, err := store.Provision(ctx, o.adminURL, demoDBPrefix+suffix)
	if err != nil {
		return fmt.Errorf("demo: create the demo database (is PostgreSQL running? `make services`): %w", err)
	}
	defer func() {
		dctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := db.Drop(dctx); err != nil {
			fmt.Fprintln(a.stderr, "demo: drop the demo database:", errorLine(err))
		}
	}()
	if err := migrations.Up(ctx, db.OwnerURL, db.RuntimeURL, a.logger); err != nil {
		return fmt.Errorf("demo: migrate: %w", err)
	}
	say("database %s (runtime role %s: not superuser, Row-Level Security on)", db.Name, db.RuntimeRole)

	// 3. The LLM: the configured one if it answers, else the echo stand-in.
	if o.llmMode == "config" {
		model := cmp.Or(cfg.LLM.Model, "llama3.1:8b")
		if err := probeLLM(ctx, cfg, model); err != nil {
			fmt.Fprintf(out, "▸ No LLM answered at %s (model %s): %s\n", cfg.Providers()[0].BaseURL, model, errorLine(err))
			fmt.Fprintf(out, "  Start one (e.g. `ollama serve` and `ollama pull %s`) and set llm.base_url / llm.model,\n", model)
			fmt.Fprintln(out, "  or run `konstruct demo --llm=echo` for an offline stand-in. Continuing with --llm=echo: answers are canned.")
			o.llmMode = "echo"
		} else {
			cfg.LLM.Model = model
			say("LLM: %s at %s", model, cfg.Providers()[0].BaseURL)
		}
	}
	if o.llmMode == "echo" {
		fake := llmfake.New(llmfake.WithHandler(llmfake.Echo))
		defer fake.Close()
		cfg.LLM.Providers = nil
		cfg.LLM.BaseURL, cfg.LLM.APIKey, cfg.LLM.Model = fake.URL(), "", "echo"
		say("LLM: offline echo stand-in (canned answers)")
	}

	// 4. The daemon's config: everything private to this run.
	cfg.Database.URL, cfg.Database.MigrateURL = db.RuntimeURL, db.OwnerURL
	if o.redisURL != "" {
		cfg.Redis.URL = o.redisURL
	}
	cfg.Redis.Prefix = demoRedisKey + suffix + ":"
	cfg.Slack.APIURL = sim.APIURL()
	cfg.SecretKey = base64.StdEncoding.EncodeToString(randomBytes(32))
	cfg.SecretKeyPrevious = nil
	cfg.HTTP.Addr = "127.0.0.1:0"
	stateDir, err := os.MkdirTemp("", "konstruct-demo-")
	if err != nil {
		return fmt.Errorf("demo: state directory: %w", err)
	}
	defer os.RemoveAll(stateDir)
	cfg.StateDir = stateDir
	if err := cfg.Validate(daemonParts(roles{gateway: true, worker: true})...); err != nil {
		return fmt.Errorf("demo: %w", err)
	}

	// 5. Seed tenant, agent and workspace the way the CLI does.
	st, err := a.openStore(ctx, cfg)
	if err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	defer st.Close()
	tenant, err := st.CreateTenant(ctx, "Demo Co", "demo")
	if err != nil {
		return fmt.Errorf("demo: tenant: %w", err)
	}
	agent, err := st.SetAgent(ctx, konstruct.Agent{
		TenantID: tenant.ID, Name: "Mara", Role: "Customer Support", Active: true,
		Persona:      "Warm, concise and practical. Uses short paragraphs and bullet lists when they help.",
		Instructions: "You work for Demo Co. Help colleagues with questions about the product and how to use Konstruct.",
	})
	if err != nil {
		return fmt.Errorf("demo: agent: %w", err)
	}
	id, err := bot.AuthTest(ctx, nil, cfg.Slack.APIURL, ws.BotToken)
	if err != nil {
		return fmt.Errorf("demo: auth.test: %w", err)
	}
	if _, err := st.AddWorkspace(ctx, konstruct.Workspace{
		TenantID: tenant.ID, TeamID: id.TeamID, TeamName: id.TeamName, BotUserID: id.BotUserID, BotID: id.BotID,
		AppToken: ws.AppToken, BotToken: ws.BotToken, Status: konstruct.WorkspaceActive,
	}); err != nil {
		return fmt.Errorf("demo: workspace: %w", err)
	}
	defer a.cleanRedis(cfg)

	// 6. The daemon itself, until the chat ends.
	dctx, stopDaemon := context.WithCancel(ctx)
	defer stopDaemon()
	ready := make(chan struct{})
	d, err := newDaemon(dctx, cfg, roles{gateway: true, worker: true}, a.logger, &daemonHooks{Ready: ready, ShutdownTimeout: 5 * time.Second})
	if err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	daemonDone := make(chan error, 1)
	go func() { daemonDone <- d.Run(dctx) }()
	select {
	case <-ready:
	case err := <-daemonDone:
		return fmt.Errorf("demo: daemon: %w", err)
	}
	if err := waitConnected(ctx, sim, ws.AppID, 15*time.Second); err != nil {
		stopDaemon()
		if derr := <-daemonDone; derr != nil && !errors.Is(derr, context.Canceled) {
			fmt.Fprintln(a.stderr, "demo: daemon:", errorLine(derr))
		}
		return fmt.Errorf("demo: %w", err)
	}
	say("tenant %q, agent %s (%s), workspace %s connected over Socket Mode", tenant.Name, agent.Name, agent.Role, ws.TeamID)

	timeout := o.timeout
	if timeout == 0 {
		timeout = cfg.LLM.Timeouts.Total + 10*time.Second
	}
	chat := &demoChat{a: a, sim: sim, team: ws.TeamID, channel: channel, user: o.user, agent: agent.Name, out: out, timeout: timeout}
	// The chat reads the terminal: a signal or a closed pipe must not
	// wait for the next line typed to clean up.
	chatDone := make(chan error, 1)
	go func() { chatDone <- chat.run(ctx, a.stdin) }()
	var chatErr error
	select {
	case chatErr = <-chatDone:
	case <-ctx.Done():
	}

	stopDaemon()
	if err := <-daemonDone; err != nil && !errors.Is(err, context.Canceled) {
		return fmt.Errorf("demo: daemon: %w", err)
	}
	say("bye: the demo database and Redis keys are removed")
	return chatErr
}

// reapDemos removes the databases, roles and Redis keys of earlier demos
// that were killed before they could clean up (SIGKILL, a closed pipe),
// leaving those of demos still running, and says what it removed; what it
// cannot remove, it names.
func (a *app) reapDemos(ctx context.Context, redisURL, adminURL string, say func(string, ...any)) {
	var also []string
	if q, err := queue.Open(queue.Config{URL: redisURL}); err == nil {
		lctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		prefixes, err := q.ListPrefixes(lctx, demoRedisPrefix)
		cancel()
		_ = q.Close()
		if err == nil {
			for _, p := range prefixes {
				also = append(also, demoDBPrefix+strings.TrimSuffix(strings.TrimPrefix(p, demoRedisKey), ":"))
			}
		}
	}
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	removed, _, err := store.ReapScratch(rctx, adminURL, demoDBPrefix, also, func(ctx context.Context, name string) error {
		return deleteRedisPrefix(ctx, redisURL, demoRedisKey+strings.TrimPrefix(name, demoDBPrefix)+":")
	})
	if len(removed) > 0 {
		say("removed what %d earlier demo(s) left behind (database, roles, Redis keys): %s", len(removed), strings.Join(removed, ", "))
	}
	if err != nil {
		say("could not remove what earlier demos left behind (%s): databases and roles %s*, Redis keys %s<hex>:*",
			errorLine(err), demoDBPrefix, demoRedisKey)
	}
}

// probeLLM asks the configured endpoint for a one-token completion.
func probeLLM(ctx context.Context, cfg *config.Config, model string) error {
	var ps []llm.Provider
	for _, p := range cfg.Providers() {
		ps = append(ps, llm.Provider{Name: p.Name, BaseURL: p.BaseURL, APIKey: p.APIKey, Models: p.Models})
	}
	c, err := llm.New(llm.Config{Providers: ps, DefaultModel: model, Timeouts: llm.Timeouts{FirstToken: 10 * time.Second, Idle: 10 * time.Second, Total: 15 * time.Second}})
	if err != nil {
		return err
	}
	defer c.Close()
	pctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	_, err = c.Probe(pctx, ps[0].Name)
	return err
}

func waitConnected(ctx context.Context, sim *slacksim.Server, appID string, d time.Duration) error {
	deadline := time.Now().Add(d)
	for sim.Connections(appID) == 0 {
		if time.Now().After(deadline) {
			return errors.New("the daemon did not open a Socket Mode connection in time")
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	return nil
}

// cleanRedis deletes the demo's keys and queue.
func (a *app) cleanRedis(cfg *config.Config) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := deleteRedisPrefix(ctx, cfg.Redis.URL, cfg.Redis.Prefix); err != nil {
		fmt.Fprintln(a.stderr, "demo: clean Redis:", errorLine(err))
	}
}

// deleteRedisPrefix deletes the demo's keys and queue.
func deleteRedisPrefix(ctx context.Context, redisURL, prefix string) error {
	q, err := queue.Open(queue.Config{URL: redisURL, Prefix: prefix})
	if err != nil {
		return err
	}
	defer q.Close()
	return q.Purge(ctx)
}

// demoChat is the terminal side: lines typed become Slack messages, and the
// thread is printed as a person would see it, the answer as it streams.
type demoChat struct {
	a       *app
	sim     *slacksim.Server
	team    string
	channel string
	user    string
	agent   string
	out     io.Writer
	timeout time.Duration

	thread   string // current thread in #general ("" = the next message starts one)
	dmThread string
}

const demoHelp = `You are @%s in #general of the emulated workspace. Type a message and press Enter:
it @mentions %s and starts a thread; %s answers in the thread.
  /reply TEXT   reply in the current thread without a mention (engaged threads)
  /dm TEXT      a direct message to %s
  /new          the next message starts a new thread
  /help         this text
  /quit         leave (Ctrl-D too)
`

func (c *demoChat) run(ctx context.Context, in io.Reader) error {
	interactive := isTerminal(in)
	fmt.Fprintf(c.out, demoHelp, c.user, c.agent, c.agent, c.agent)
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 64*1024), 1<<20)
	for {
		if interactive {
			fmt.Fprint(c.out, "\n> ")
		}
		if !sc.Scan() {
			break
		}
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		if !interactive {
			fmt.Fprintf(c.out, "\n> %s\n", line)
		}
		if err := c.handle(ctx, line); err != nil {
			if errors.Is(err, errQuit) {
				return nil
			}
			if ctx.Err() != nil {
				return nil
			}
			fmt.Fprintln(c.out, "  ! "+errorLine(err))
		}
	}
	return sc.Err()
}

var errQuit = errors.New("quit")

func (c *demoChat) handle(ctx context.Context, line string) error {
	cmd, rest, _ := strings.Cut(line, " ")
	rest = strings.TrimSpace(rest)
	switch cmd {
	case "/quit", "/exit":
		return errQuit
	case "/help":
		fmt.Fprintf(c.out, demoHelp, c.user, c.agent, c.agent, c.agent)
		return nil
	case "/new":
		c.thread = ""
		fmt.Fprintln(c.out, "  (the next message starts a new thread)")
		return nil
	case "/dm":
		if rest == "" {
			return errors.New("/dm needs a message")
		}
		ts, err := c.sim.DM(c.team, c.user, rest, c.dmThread)
		if err != nil {
			return err
		}
		if c.dmThread == "" {
			c.dmThread = ts
		}
		return c.watch(ctx, c.sim.DMChannel(c.team, c.user), c.dmThread, ts)
	case "/reply":
		if rest == "" {
			return errors.New("/reply needs a message")
		}
		if c.thread == "" {
			return errors.New("no thread yet: send a message first")
		}
		ts, err := c.sim.Post(c.team, c.channel, c.user, rest, c.thread)
		if err != nil {
			return err
		}
		return c.watch(ctx, c.channel, c.thread, ts)
	}
	if strings.HasPrefix(cmd, "/") {
		return fmt.Errorf("unknown command %s (try /help)", cmd)
	}
	ts, err := c.sim.Mention(c.team, c.channel, c.user, line, c.thread)
	if err != nil {
		return err
	}
	if c.thread == "" {
		c.thread = ts
	}
	return c.watch(ctx, c.channel, c.thread, ts)
}

// watch prints what appears in the thread after the message at ts: the
// placeholder, the answer as it grows, ephemerals; it returns once the
// answer has settled or nothing came within the timeout.
func (c *demoChat) watch(ctx context.Context, channel, thread, ts string) error {
	deadline := time.Now().Add(c.timeout)
	printed := map[string]string{} // bot message ts → text printed so far
	var lastChange time.Time
	seenEphemerals := len(c.sim.Thread(c.team, channel, thread).Ephemerals[c.user])
	for time.Now().Before(deadline) {
		v := c.sim.Thread(c.team, channel, thread)
		if eph := v.Ephemerals[c.user]; len(eph) > seenEphemerals {
			for _, e := range eph[seenEphemerals:] {
				fmt.Fprintf(c.out, "  (only visible to you) %s\n", slackEntities.Replace(e))
			}
			return nil
		}
		changed := false
		for _, m := range v.Messages {
			if !m.IsBot || m.TS <= ts {
				continue
			}
			old, seen := printed[m.TS]
			text := slackEntities.Replace(m.Text)
			switch {
			case !seen:
				fmt.Fprintf(c.out, "  %s: %s", c.agent, indent(text))
				changed = true
			case text != old && strings.HasPrefix(text, old):
				fmt.Fprint(c.out, indent(text[len(old):]))
				changed = true
			case text != old:
				fmt.Fprintf(c.out, "\n  %s: %s", c.agent, indent(text))
				changed = true
			}
			printed[m.TS] = text
		}
		if changed {
			lastChange = time.Now()
		}
		if len(printed) > 0 && !lastChange.IsZero() && time.Since(lastChange) > 1500*time.Millisecond && !stillThinking(v, ts) {
			fmt.Fprintln(c.out)
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	if len(printed) == 0 {
		return errors.New("no answer appeared in the thread in time (see the logs above)")
	}
	fmt.Fprintln(c.out)
	return nil
}

// indent keeps the lines of an answer under its speaker, apart from the
// "> " lines the person typed.
func indent(s string) string { return strings.ReplaceAll(s, "\n", "\n    ") }

// stillThinking reports whether a reply after ts is still the placeholder or streaming.
func stillThinking(v slacksim.ThreadView, ts string) bool {
	for _, m := range v.Messages {
		if m.IsBot && m.TS > ts && (m.Streaming || strings.HasPrefix(m.Text, "Thinking")) {
			return true
		}
	}
	return false
}

func isTerminal(r io.Reader) bool {
	f, ok := r.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}

func randomHex(n int) string { return hex.EncodeToString(randomBytes(n)) }

// slackEntities decodes the text of a message as a Slack client shows it:
// the bot escapes &, < and > in its text (bot/neutralize.go).
var slackEntities = strings.NewReplacer("&lt;", "<", "&gt;", ">", "&amp;", "&")
