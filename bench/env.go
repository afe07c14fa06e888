package bench

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func newSecretKey() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return base64.StdEncoding.EncodeToString(b)
}

// freeAddr returns a loopback address with a port nobody listens on.
func freeAddr() (string, error) {
	ln, err := (&net.ListenConfig{}).Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// process is a child started by the benchmark (the daemon or the Bolt peer).
type process struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
	err  error

	mu    sync.Mutex
	lines []string // the last lines of stderr, for error messages
}

// startProcess starts argv with env; stdout lines go to onLine (if set),
// stderr goes to logw and is kept (last lines) for error messages.
func startProcess(name string, argv []string, env []string, dir string, logw io.Writer, onLine func(string)) (*process, error) {
	p := &process{name: name, done: make(chan struct{})}
	// Not CommandContext: the runner stops its children itself, with
	// SIGTERM first, so that the daemon's graceful stop is measured too.
	cmd := exec.Command(argv[0], argv[1:]...) //nolint:noctx // see above
	cmd.Env = env
	cmd.Dir = dir
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p.cmd = cmd
	var readers sync.WaitGroup
	readers.Go(func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			if onLine != nil {
				onLine(sc.Text())
			}
		}
		_, _ = io.Copy(io.Discard, stdout)
	})
	readers.Go(func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			if logw != nil {
				fmt.Fprintln(logw, line)
			}
			p.mu.Lock()
			if p.lines = append(p.lines, line); len(p.lines) > 20 {
				p.lines = p.lines[1:]
			}
			p.mu.Unlock()
		}
		_, _ = io.Copy(io.Discard, stderr)
	})
	go func() {
		readers.Wait()
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

func (p *process) pid() int { return p.cmd.Process.Pid }

func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// tail is the last lines the process wrote on stderr.
func (p *process) tail() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return strings.Join(p.lines, "\n")
}

// kill sends SIGKILL (a crash: no graceful stop) and waits for the exit.
func (p *process) kill() {
	if p.exited() {
		return
	}
	_ = p.cmd.Process.Kill()
	<-p.done
}

// stop sends SIGTERM and waits up to grace, then kills the process.
func (p *process) stop(grace time.Duration) error {
	if p.exited() {
		return p.err
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return p.err
	case <-time.After(grace):
		_ = p.cmd.Process.Kill()
		<-p.done
		return fmt.Errorf("%s did not stop within %v after SIGTERM (killed)", p.name, grace)
	}
}

// runCLI runs one konstruct subcommand and returns its trimmed stdout.
func runCLI(ctx context.Context, bin string, env []string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = env
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("konstruct %s: %w: %s", strings.Join(args[:min(2, len(args))], " "), err, strings.TrimSpace(errb.String()))
	}
	return strings.TrimSpace(out.String()), nil
}

// withEnv returns env with each KEY=value of kv set: replaced where env has
// KEY, else appended. env itself is not changed.
func withEnv(env []string, kv ...string) []string {
	out := append([]string(nil), env...)
	for _, set := range kv {
		k, _, _ := strings.Cut(set, "=")
		found := false
		for i, e := range out {
			if strings.HasPrefix(e, k+"=") {
				out[i], found = set, true
			}
		}
		if !found {
			out = append(out, set)
		}
	}
	return out
}

// baseEnv is the environment without any KONSTRUCT_ or SLACK_ variable of
// the caller: the children get only what the benchmark sets.
func baseEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "KONSTRUCT_") || strings.HasPrefix(kv, "SLACK_") {
			continue
		}
		env = append(env, kv)
	}
	return env
}
