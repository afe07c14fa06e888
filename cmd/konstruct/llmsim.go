package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/konstruct/konstruct/llm/llmfake"
)

func init() { commands = append(commands, newLLMSimCmd) }

// newLLMSimCmd serves the demo's offline LLM stand-in on its own, so that a
// daemon tried by hand against `konstruct slacksim` answers without a model.
func newLLMSimCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "llmsim",
		Short: "Run an offline stand-in for the LLM whose answers are canned and say so (the demo's --llm=echo)",
		Long: "Starts an OpenAI-compatible server on 127.0.0.1, at a free port, whose every answer says it is\n" +
			"canned, and prints base_url= and model=, one per line: point llm.base_url and llm.model at them.\n" +
			"For trying Konstruct without a model; never for people. Runs until interrupted.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			fake := llmfake.New(llmfake.WithHandler(llmfake.Echo), llmfake.WithModels("echo"), llmfake.WithoutRecording())
			defer fake.Close()
			if _, err := fmt.Fprintf(a.stdout, "base_url=%s\nmodel=echo\n", fake.URL()); err != nil {
				return err
			}
			<-cmd.Context().Done()
			return nil
		},
	}
}
