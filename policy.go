package konstruct

import (
	"slices"
	"time"
)

// FollowMode says which messages of a channel thread the AI employee
// answers without being mentioned in them (konstruct policy set
// --follow-threads). It applies to channels; a DM is a conversation with
// the bot and always has its history.
type FollowMode string

const (
	// FollowAuto: after an answer in a thread, later messages in it are
	// answered without a mention for the follow TTL (today's behaviour).
	FollowAuto FollowMode = "auto"
	// FollowMention: only mentions are answered, each with the thread's
	// earlier messages as context.
	FollowMention FollowMode = "mention"
	// FollowOff: only mentions are answered, each on its own: the thread's
	// other messages are not read and never reach the model.
	FollowOff FollowMode = "off"
)

// ParseFollowMode reads auto, mention or off.
func ParseFollowMode(s string) (FollowMode, bool) {
	switch m := FollowMode(s); m {
	case FollowAuto, FollowMention, FollowOff:
		return m, true
	}
	return "", false
}

// Policy is who a tenant's AI employee answers, where, how it follows
// threads, and how many LLM tokens it may spend. The zero lists mean
// "everyone" and "everywhere"; DefaultPolicy is today's behaviour for a
// tenant that never set one.
type Policy struct {
	TenantID string
	// Channels the AI employee answers in; empty: every channel it is in.
	Channels []string
	// DenyChannels are never answered in, whatever Channels says.
	DenyChannels []string
	// Users it answers; empty: everyone.
	Users []string
	// DMs: whether it answers direct messages.
	DMs bool
	// Follow is how it follows channel threads.
	Follow FollowMode
	// FollowTTL is how long a thread stays followed after an answer with
	// FollowAuto; 0 means the install's threads.engaged_ttl.
	FollowTTL time.Duration
	// TokensPerDay and TokensPerMonth bound the LLM tokens (prompt and
	// answer) spent per UTC day and calendar month (UTC); 0: no bound.
	TokensPerDay, TokensPerMonth int64
	UpdatedAt                    time.Time
}

// DefaultPolicy is the policy of a tenant that set none: every channel,
// everyone, DMs on, threads followed for threads.engaged_ttl, no budget.
func DefaultPolicy(tenantID string) Policy {
	return Policy{TenantID: tenantID, DMs: true, Follow: FollowAuto}
}

// AllowsChannel reports whether the AI employee answers in a channel (not
// a DM): deny beats allow.
func (p Policy) AllowsChannel(channelID string) bool {
	if slices.Contains(p.DenyChannels, channelID) {
		return false
	}
	return len(p.Channels) == 0 || slices.Contains(p.Channels, channelID)
}

// AllowsUser reports whether the AI employee answers a person.
func (p Policy) AllowsUser(userID string) bool {
	return len(p.Users) == 0 || slices.Contains(p.Users, userID)
}

// PolicyPatch changes some settings of a policy and leaves the others as
// they are: a nil field is not changed. An empty list clears it (Channels
// and Users then mean "all" again).
type PolicyPatch struct {
	Channels, DenyChannels, Users *[]string
	DMs                           *bool
	Follow                        *FollowMode
	FollowTTL                     *time.Duration
	TokensPerDay, TokensPerMonth  *int64
}

// Empty reports whether the patch changes nothing.
func (p PolicyPatch) Empty() bool { return p == PolicyPatch{} }

// Apply returns pol with the patch's fields set.
func (p PolicyPatch) Apply(pol Policy) Policy {
	if p.Channels != nil {
		pol.Channels = slices.Clone(*p.Channels)
	}
	if p.DenyChannels != nil {
		pol.DenyChannels = slices.Clone(*p.DenyChannels)
	}
	if p.Users != nil {
		pol.Users = slices.Clone(*p.Users)
	}
	if p.DMs != nil {
		pol.DMs = *p.DMs
	}
	if p.Follow != nil {
		pol.Follow = *p.Follow
	}
	if p.FollowTTL != nil {
		pol.FollowTTL = *p.FollowTTL
	}
	if p.TokensPerDay != nil {
		pol.TokensPerDay = *p.TokensPerDay
	}
	if p.TokensPerMonth != nil {
		pol.TokensPerMonth = *p.TokensPerMonth
	}
	return pol
}

// Budget periods.
const (
	PeriodDay   = "day"
	PeriodMonth = "month"
)

// BudgetReset is when the budget of period that holds at t starts again:
// the next 00:00 UTC, or the first day of the next month at 00:00 UTC.
func BudgetReset(period string, t time.Time) time.Time {
	t = t.UTC()
	if period == PeriodMonth {
		return time.Date(t.Year(), t.Month()+1, 1, 0, 0, 0, 0, time.UTC)
	}
	return time.Date(t.Year(), t.Month(), t.Day()+1, 0, 0, 0, 0, time.UTC)
}
