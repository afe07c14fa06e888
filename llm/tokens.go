package llm

// MessageOverhead is the estimated cost in tokens of one chat message beyond
// its text (role, separators), and of priming the reply once per request.
const MessageOverhead = 4

// EstimateTokens is a cheap, tokenizer-free estimate of the tokens in s: one
// per four ASCII characters, rounded up, plus one per non-ASCII character.
// Latin text comes out near chars/4; scripts such as CJK, where a character is
// often a token of its own, are overestimated rather than under, which is the
// safe side for a context budget.
func EstimateTokens(s string) int {
	ascii, other := 0, 0
	for _, r := range s {
		if r < 0x80 {
			ascii++
		} else {
			other++
		}
	}
	return (ascii+3)/4 + other
}

// EstimateMessageTokens estimates one message: its name, content and overhead.
func EstimateMessageTokens(m Message) int {
	return MessageOverhead + EstimateTokens(m.Name) + EstimateTokens(m.Content)
}

// EstimateMessagesTokens estimates a whole prompt, as PromptTokens is
// estimated when a server reports no usage.
func EstimateMessagesTokens(msgs []Message) int {
	n := MessageOverhead // the reply's priming
	for _, m := range msgs {
		n += EstimateMessageTokens(m)
	}
	return n
}
