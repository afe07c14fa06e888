package main

import (
	"bufio"
	"fmt"
	"os"
	"regexp"
	"strings"
)

// serviceEnvFile is the EnvironmentFile of the packaged unit: doctor points
// at it when the settings it was given are incomplete.
var serviceEnvFile = "/etc/konstruct/konstruct.env"

// envFile is a systemd EnvironmentFile as the service sees it.
type envFile struct {
	Path string
	Vars map[string]string
	// Commands lists the variables whose value is a shell command
	// substitution ($(…) or `…`): systemd passes it on literally.
	Commands []string
	// Invalid lists the lines that are not KEY=value (`export K=v`, a
	// bare word): systemd ignores them, with a warning in the journal.
	Invalid []string
}

var envKey = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// readEnvFile parses an EnvironmentFile the way systemd does for the
// common forms: KEY=value lines, blank lines and # or ; comments ignored,
// one pair of surrounding quotes removed, backslash line continuations
// joined, no expansion of any kind.
func readEnvFile(path string) (*envFile, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	ef := &envFile{Path: path, Vars: map[string]string{}}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1<<20)
	n, pending := 0, ""
	for sc.Scan() {
		n++
		line := sc.Text()
		if strings.HasSuffix(line, `\`) {
			pending += strings.TrimSuffix(line, `\`)
			continue
		}
		line, pending = strings.TrimSpace(pending+line), ""
		if line == "" || line[0] == '#' || line[0] == ';' {
			continue
		}
		key, value, ok := strings.Cut(line, "=")
		key = strings.TrimSpace(key)
		if !ok || !envKey.MatchString(key) {
			ef.Invalid = append(ef.Invalid, fmt.Sprintf("line %d (%s)", n, redactLine(line)))
			continue
		}
		value = strings.TrimSpace(value)
		if len(value) >= 2 && (value[0] == '"' || value[0] == '\'') && value[len(value)-1] == value[0] {
			value = value[1 : len(value)-1]
		}
		if strings.Contains(value, "$(") || strings.Contains(value, "`") {
			ef.Commands = append(ef.Commands, key)
		}
		ef.Vars[key] = value
	}
	return ef, sc.Err()
}

// getenv looks a variable up in the file first, then in fallback: what
// the service gets, plus what the shell adds for keys the file lacks.
func (ef *envFile) getenv(fallback func(string) string) func(string) string {
	return func(k string) string {
		if v, ok := ef.Vars[k]; ok {
			return v
		}
		return fallback(k)
	}
}

// redactLine keeps a malformed line out of the output beyond its start:
// it may hold a secret.
func redactLine(s string) string {
	if len(s) > 12 {
		return s[:12] + "…"
	}
	return s
}
