package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/konstruct/konstruct"
	"github.com/konstruct/konstruct/config"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

// app is what every subcommand shares: the process environment as run()
// received it, and the lazily loaded configuration.
type app struct {
	getenv     func(string) string
	stdin      io.Reader
	stdout     io.Writer
	stderr     io.Writer
	configPath string
	root       *cobra.Command
	logger     *slog.Logger
}

// run is the whole program: main only maps its error to an exit code.
// Tests call it with their own arguments, environment and streams.
func run(ctx context.Context, args []string, getenv func(string) string, stdin io.Reader, stdout, stderr io.Writer) error {
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()

	a := &app{getenv: getenv, stdin: stdin, stdout: stdout, stderr: stderr}
	root := &cobra.Command{
		Use:           "konstruct",
		Short:         "Konstruct: a self-hosted AI employee for Slack",
		Version:       version,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetArgs(args)
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.PersistentFlags().StringVar(&a.configPath, "config", "", "config file (default: $KONSTRUCT_CONFIG, ./konstruct.yaml, /etc/konstruct/konstruct.yaml)")
	root.PersistentFlags().String("log-format", "", "log format: auto, json or text (log.format)")
	root.PersistentFlags().String("log-level", "", "log level: debug, info, warn or error (log.level)")
	a.root = root

	for _, add := range commands {
		root.AddCommand(add(a))
	}
	return root.ExecuteContext(ctx)
}

// commands lists the constructors of the top-level subcommands; each file
// that defines commands adds its own in an init function.
var commands []func(*app) *cobra.Command

// config loads the configuration and validates the parts a command needs.
func (a *app) config(cmd *cobra.Command, parts ...config.Part) (*config.Config, error) {
	return a.configAnd(cmd, nil, parts...)
}

// configAnd is config for a command whose flags were checked first: a flag
// error and configuration errors are reported together, so that one try
// shows everything that is missing.
func (a *app) configAnd(cmd *cobra.Command, flagErr error, parts ...config.Part) (*config.Config, error) {
	cfg, err := config.Load(config.Options{Path: a.configPath, Getenv: a.getenv, Flags: cmd.Flags()})
	if cfg != nil { // also with a value that did not parse: report every problem at once
		err = errors.Join(err, cfg.Validate(parts...))
	}
	if err != nil || flagErr != nil {
		return nil, errors.Join(flagErr, err)
	}
	a.setLogger(newLogger(a.stderr, cfg.Log.Format, cfg.Log.Level))
	for _, k := range cfg.Unknown {
		a.logger.Warn("unknown key in the config file, ignored (a typo?)", "key", k, "file", cfg.File)
	}
	return cfg, nil
}

// setLogger sets the command's logger, which libraries with a process-wide
// logger (go-redis) use too.
func (a *app) setLogger(l *slog.Logger) {
	a.logger = l
	processLogger.Store(l)
}

// errorLine renders an error as the one line the CLI prints on stderr: the
// wrapping context ("workspace add: bot token: …") is kept, a *konstruct.Error
// shows its message (and its cause when the message does not already say
// it) instead of its code, joined errors are separated by "; " and tokens
// are redacted.
func errorLine(err error) string {
	msg := err.Error()
	var e *konstruct.Error
	if errors.As(err, &e) {
		human := e.Message
		// The cause helps with a failure of the system (connection refused,
		// timeout); for a refusal (conflict, not found, invalid) the message
		// says it all and the cause is a database or library string.
		if e.Err != nil && (e.Code == konstruct.EINTERNAL || e.Code == konstruct.EUNAVAILABLE || e.Code == konstruct.ETIMEOUT) {
			if cause := e.Err.Error(); !strings.Contains(human, cause) {
				human = strings.TrimSuffix(human, ".") + ": " + cause
			}
		}
		if full := e.Error(); strings.Contains(msg, full) {
			msg = strings.Replace(msg, full, human, 1)
		} else {
			msg = human
		}
	}
	var parts []string
	for l := range strings.SplitSeq(msg, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			parts = append(parts, l)
		}
	}
	msg = strings.ReplaceAll(strings.Join(parts, "; "), ":; ", ": ")
	return konstruct.Redact(msg)
}

// exactArgs is cobra.ExactArgs with a message that says what is expected.
func exactArgs(n int, what string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != n {
			return fmt.Errorf("%s expects %s (see %s --help)", cmd.CommandPath(), what, cmd.CommandPath())
		}
		return nil
	}
}
