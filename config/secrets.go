package config

import (
	"fmt"
	"os"
	"strings"

	"github.com/spf13/viper"

	"github.com/konstruct/konstruct"
)

// Secrets in the configuration: where they may come from, and the file that
// holds them.
//
// LLM API keys come, for each provider, from the first of: the environment
// (KONSTRUCT_LLM_API_KEY for the single provider of llm.base_url,
// KONSTRUCT_LLM_PROVIDERS_<NAME>_API_KEY for a provider of llm.providers,
// NAME upper-cased with other characters than letters and digits as "_"),
// a file named by api_key_file (llm.api_key_file or
// llm.providers[].api_key_file; its content, trimmed), or api_key in the
// config file. Setting both api_key and api_key_file in the file is an
// error: one of them would be ignored.
//
// A config file that holds a secret (secret_key, secret_key_previous, an
// api_key, redis.sentinel.password, tracing.headers, a URL or connection string with a
// password) must be readable by its owner alone: one that its group or
// others can read is refused, with the chmod that fixes it.

// secretKeysInFile lists the settings of the config file that hold a secret.
func secretKeysInFile(v *viper.Viper) []string {
	var out []string
	for _, k := range []string{"secret_key", "secret_key_previous", "llm.api_key", "redis.sentinel.password"} {
		if v.InConfig(k) && fmt.Sprint(v.Get(k)) != "" && fmt.Sprint(v.Get(k)) != "[]" {
			out = append(out, k)
		}
	}
	// Headers of the trace exports: a collector's authorization.
	if h, ok := v.Get("tracing.headers").(map[string]any); ok && v.InConfig("tracing.headers") && len(h) > 0 {
		out = append(out, "tracing.headers")
	}
	for _, k := range []string{"database.url", "database.migrate_url", "redis.url", "llm.base_url"} {
		if v.InConfig(k) && carriesCredential(v.GetString(k)) {
			out = append(out, k)
		}
	}
	if list, ok := v.Get("llm.providers").([]any); ok {
		for i, item := range list {
			p, ok := item.(map[string]any)
			if !ok {
				continue
			}
			if key, _ := p["api_key"].(string); key != "" {
				out = append(out, fmt.Sprintf("llm.providers[%d].api_key", i))
			}
			if u, _ := p["base_url"].(string); carriesCredential(u) {
				out = append(out, fmt.Sprintf("llm.providers[%d].base_url", i))
			}
		}
	}
	return out
}

// carriesCredential reports whether a URL or connection string holds a
// password (or a key), as the redaction of printed text recognises one.
func carriesCredential(s string) bool { return s != "" && konstruct.Redact(s) != s }

// checkPrivate refuses a config file holding secrets that its group or
// others can read.
func checkPrivate(v *viper.Viper, path string) error {
	secrets := secretKeysInFile(v)
	if len(secrets) == 0 {
		return nil
	}
	info, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("config file %s: %w", path, err)
	}
	if mode := info.Mode().Perm(); mode&0o044 != 0 {
		return fmt.Errorf("config file %s holds secrets (%s) and can be read by its group or others (mode %04o): run `chmod 600 %s`, "+
			"or move the secrets to the environment (e.g. /etc/konstruct/konstruct.env, mode 0600)",
			path, strings.Join(secrets, ", "), mode, path)
	}
	return nil
}

// ProviderKeyEnv is the environment variable that sets the API key of the
// provider named name in llm.providers.
func ProviderKeyEnv(name string) string {
	var b strings.Builder
	for _, r := range strings.ToUpper(name) {
		if (r >= 'A' && r <= 'Z') || (r >= '0' && r <= '9') {
			b.WriteRune(r)
		} else {
			b.WriteByte('_')
		}
	}
	return "KONSTRUCT_LLM_PROVIDERS_" + b.String() + "_API_KEY"
}

// resolveAPIKeys sets each provider's API key from the environment, its
// key file or the config file, in that order; a key file that cannot be
// read is kept in keyErrs for Validate(NeedLLM).
func (c *Config) resolveAPIKeys(getenv func(string) string) {
	if len(c.LLM.Providers) == 0 {
		// llm.api_key already holds KONSTRUCT_LLM_API_KEY when it is set.
		if getenv(EnvName("llm.api_key")) == "" {
			key, err := keyFrom(c.LLM.APIKey, c.LLM.APIKeyFile, "llm.api_key", "llm.api_key_file")
			c.LLM.APIKey = key
			if err != nil {
				c.keyErrs = append(c.keyErrs, err)
			}
		}
		return
	}
	for i, p := range c.Providers() {
		if env := getenv(ProviderKeyEnv(p.Name)); env != "" {
			c.LLM.Providers[i].APIKey = strings.TrimSpace(env)
			continue
		}
		field := fmt.Sprintf("llm.providers[%d].", i)
		key, err := keyFrom(p.APIKey, p.APIKeyFile, field+"api_key", field+"api_key_file")
		c.LLM.Providers[i].APIKey = key
		if err != nil {
			c.keyErrs = append(c.keyErrs, err)
		}
	}
}

// keyFrom is the key of api_key or of the file api_key_file names.
func keyFrom(key, file, keyName, fileName string) (string, error) {
	if file == "" {
		return key, nil
	}
	if key != "" {
		return key, &KeyError{Key: fileName, Reason: fmt.Sprintf("and %s are both set: keep one", keyName)}
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return "", &KeyError{Key: fileName, Reason: fmt.Sprintf("cannot be read: %v", err)}
	}
	key = strings.TrimSpace(string(b))
	if key == "" {
		return "", &KeyError{Key: fileName, Reason: fmt.Sprintf("names %s, which is empty", file)}
	}
	return key, nil
}
