// Command konstruct is the Konstruct daemon and its admin CLI.
package main

import (
	"context"
	"fmt"
	"os"
)

func main() {
	// Process-wide, hence here and not in run(): tests run several run()s at once.
	routeLibraryLogs()
	if err := run(context.Background(), os.Args[1:], os.Getenv, os.Stdin, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "konstruct: "+errorLine(err))
		os.Exit(1)
	}
}
