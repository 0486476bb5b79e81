// Command herald runs Herald nodes and operates clusters.
//
//	herald serve --node-id n1 --bootstrap n1=10.0.0.1:7170,n2=10.0.0.2:7170,n3=10.0.0.3:7170 ...
//	herald dev                      # a local 3-node cluster in one process, no setup
//	herald admin status             # operate a cluster through a node's admin API
//
// `herald <command> --help` lists every flag; docs/operations.md explains
// running a cluster and docs/admin.md the admin API.
package main

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"github.com/urfave/cli/v2"
)

func main() {
	if err := newApp().Run(os.Args); err != nil {
		fmt.Fprintln(os.Stderr, "herald:", err)
		os.Exit(1)
	}
}

func newApp() *cli.App {
	return &cli.App{
		Name:                 "herald",
		Usage:                "a strongly consistent real-time room server",
		HideHelpCommand:      true,
		EnableBashCompletion: true,
		Commands:             []*cli.Command{serveCommand(), devCommand(), adminCommand(), apiCommand()},
	}
}

// newLogger builds the process's structured logger.
func newLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch strings.ToLower(format) {
	case "text", "":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("--log-format %q: want text or json", format)
}
