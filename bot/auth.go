package bot

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/konstruct/konstruct"
	"github.com/slack-go/slack"
)

// Identity is what auth.test tells about a bot token.
type Identity struct {
	TeamID       string
	TeamName     string
	EnterpriseID string
	BotUserID    string
	BotID        string
}

// AuthTest checks a bot token against the Web API at apiURL and returns the
// identity it belongs to. A refused token is EUNAUTHORIZED, an unreachable
// API EUNAVAILABLE; neither error carries the token.
func AuthTest(ctx context.Context, httpClient *http.Client, apiURL, botToken string) (Identity, error) {
	if !strings.HasPrefix(botToken, "xoxb-") {
		return Identity{}, konstruct.Errorf(konstruct.EINVALID, "the bot token must start with xoxb-")
	}
	opts := []slack.Option{slack.OptionAPIURL(apiURL)}
	if httpClient != nil {
		opts = append(opts, slack.OptionHTTPClient(httpClient))
	}
	resp, err := slack.New(botToken, opts...).AuthTestContext(ctx)
	if err != nil {
		return Identity{}, slackError("auth.test", err)
	}
	return Identity{
		TeamID:       resp.TeamID,
		TeamName:     resp.Team,
		EnterpriseID: resp.EnterpriseID,
		BotUserID:    resp.UserID,
		BotID:        resp.BotID,
	}, nil
}

// fatalAuth lists the Slack errors that mean a token will never work again.
var fatalAuth = map[string]bool{
	"invalid_auth": true, "not_authed": true, "token_revoked": true,
	"account_inactive": true, "token_expired": true, "no_permission": true,
}

// IsAuthError reports whether err says Slack refused the token for good.
func IsAuthError(err error) bool {
	var se slack.SlackErrorResponse
	if errors.As(err, &se) {
		return fatalAuth[se.Err]
	}
	return konstruct.ErrorCode(err) == konstruct.EUNAUTHORIZED
}

// slackError maps a slack-go error to a *konstruct.Error whose cause is a
// *konstruct.SlackError: the method, Slack's error code and any Retry-After
// travel on root types, so the core never looks into slack-go's errors.
// Transport errors are redacted (URLs could carry a token in a query).
func slackError(method string, err error) error {
	if err == nil {
		return nil
	}
	var se slack.SlackErrorResponse
	if errors.As(err, &se) {
		cause := &konstruct.SlackError{Method: method, Code: se.Err, Err: err}
		if fatalAuth[se.Err] {
			return &konstruct.Error{Code: konstruct.EUNAUTHORIZED, Message: "Slack refused the token (" + se.Err + ") in " + method, Err: cause}
		}
		return &konstruct.Error{Code: konstruct.EINVALID, Message: "Slack " + method + " failed: " + se.Err, Err: cause}
	}
	var rl *slack.RateLimitedError
	if errors.As(err, &rl) {
		return &konstruct.Error{Code: konstruct.ERATELIMIT, Message: "Slack rate-limited " + method,
			Err: &konstruct.SlackError{Method: method, RetryAfter: max(rl.RetryAfter, time.Millisecond), Err: err}}
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return &konstruct.Error{Code: konstruct.ETIMEOUT, Message: "Slack " + method + " timed out", Err: &konstruct.SlackError{Method: method, Err: err}}
	}
	return &konstruct.Error{Code: konstruct.EUNAVAILABLE, Message: "could not reach Slack for " + method + ": " + konstruct.Redact(err.Error()),
		Err: &konstruct.SlackError{Method: method}}
}

// CheckAppToken asks apps.connections.open for a Socket Mode URL with the
// app-level token: a refused token is EUNAUTHORIZED. The URL is discarded
// (tickets are single-use and expire unused).
func CheckAppToken(ctx context.Context, httpClient *http.Client, apiURL, appToken string) error {
	if !strings.HasPrefix(appToken, "xapp-") {
		return konstruct.Errorf(konstruct.EINVALID, "the app-level token must start with xapp-")
	}
	opts := []slack.Option{slack.OptionAPIURL(apiURL), slack.OptionAppLevelToken(appToken)}
	if httpClient != nil {
		opts = append(opts, slack.OptionHTTPClient(httpClient))
	}
	if _, _, err := slack.New("", opts...).StartSocketModeContext(ctx); err != nil {
		return slackError("apps.connections.open", err)
	}
	return nil
}
