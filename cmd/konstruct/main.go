// Command konstruct is the Konstruct daemon and its admin CLI.
package main

import (
	"context"
	"fmt"
	"os"
)

func main() {
	if err := run(context.Background(), os.Args[1:], os.Getenv, os.Stdin, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "konstruct: "+errorLine(err))
		os.Exit(1)
	}
}
