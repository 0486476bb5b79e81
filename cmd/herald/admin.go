package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/heraldhq/herald/admin"
)

// Exit codes of herald admin.
const (
	exitError       = 1
	exitUsage       = 2
	exitInterrupted = 130
)

// adminCommand is "herald admin": the operator's commands, which talk to a
// node's admin API (docs/admin.md), and the offline backup and restore of a
// stopped node's data directory.
func adminCommand() *cli.Command {
	return &cli.Command{
		Name:  "admin",
		Usage: "operate a cluster through a node's admin API; back up and restore stopped nodes",
		Description: "Commands talk to the admin API on a node's client port (--addr) with a bearer token (--token).\n" +
			"Global flags go before the subcommand: herald admin --addr http://10.0.0.5:7071 --json status",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "addr", Value: "http://127.0.0.1:7071", EnvVars: []string{"HERALD_ADMIN_ADDR"},
				Usage: "base URL of a node's client port"},
			&cli.StringFlag{Name: "token", EnvVars: []string{"HERALD_ADMIN_TOKEN"}, Usage: "admin API token"},
			&cli.BoolFlag{Name: "json", Usage: "print the API's JSON instead of tables"},
			&cli.DurationFlag{Name: "timeout", Value: 2 * time.Minute,
				Usage: "bound on each request (waiting for a job is bounded by the job, and Ctrl-C)"},
		},
		Subcommands: []*cli.Command{
			leaf(&cli.Command{Name: "status", Usage: "nodes, groups, rooms and a health verdict", Action: adminAction(cmdStatus)}),
			{
				Name:  "nodes",
				Usage: "list, add, decommission and remove nodes",
				Subcommands: []*cli.Command{
					leaf(&cli.Command{Name: "list", Usage: "list the cluster's nodes", Action: adminAction(cmdNodesList)}),
					leaf(&cli.Command{Name: "add", ArgsUsage: "SEED_PEER_ADDR...",
						Usage:  "make the node at --addr, started without bootstrap or join, join the cluster of the seeds",
						Flags:  []cli.Flag{&cli.DurationFlag{Name: "wait", Value: 30 * time.Second, Usage: "how long the join may take"}},
						Action: adminAction(cmdNodesAdd)}),
					leaf(&cli.Command{Name: "decommission", ArgsUsage: "NODE_ID",
						Usage:  "move every replica off a node and remove it from the cluster (a job; Ctrl-C stops it, running it again resumes)",
						Flags:  jobFlags(),
						Action: adminAction(cmdDecommission)}),
					leaf(&cli.Command{Name: "remove", ArgsUsage: "NODE_ID",
						Usage:  "forget a node that is gone, after moving its replicas to the others (refused while it runs)",
						Flags:  jobFlags(),
						Action: adminAction(cmdRemove)}),
				},
			},
			{
				Name:  "groups",
				Usage: "list and show raft groups, move replicas, transfer leaderships",
				Subcommands: []*cli.Command{
					leaf(&cli.Command{Name: "list", Usage: "every group with its leader and replicas", Action: adminAction(cmdGroupsList)}),
					leaf(&cli.Command{Name: "show", ArgsUsage: "GROUP", Usage: "one group with each replica's state and lag",
						Action: adminAction(cmdGroupsShow)}),
					leaf(&cli.Command{Name: "move", ArgsUsage: "GROUP --from NODE --to NODE",
						Usage: "move a replica of a group to another node (running it again finishes an interrupted move)",
						Flags: []cli.Flag{
							&cli.StringFlag{Name: "from", Usage: "node to move the replica off"},
							&cli.StringFlag{Name: "to", Usage: "node to move it to"},
						},
						Action: adminAction(cmdGroupsMove)}),
					leaf(&cli.Command{Name: "repair", ArgsUsage: "GROUP --node NODE",
						Usage:  "rebuild a replica from the group's other replicas (for a replica reported damaged)",
						Flags:  []cli.Flag{&cli.StringFlag{Name: "node", Usage: "node whose replica to rebuild"}},
						Action: adminAction(cmdGroupsRepair)}),
					leaf(&cli.Command{Name: "transfer-leader", ArgsUsage: "GROUP --to NODE", Usage: "hand a group's leadership to a replica",
						Flags:  []cli.Flag{&cli.StringFlag{Name: "to", Usage: "node to lead the group"}},
						Action: adminAction(cmdGroupsTransfer)}),
				},
			},
			leaf(&cli.Command{Name: "rebalance", Usage: "even out replicas and leaders (a job; Ctrl-C stops it, running it again resumes)",
				Flags:  append(jobFlags(), &cli.BoolFlag{Name: "dry-run", Usage: "print the plan and change nothing"}),
				Action: adminAction(cmdRebalance)}),
			{
				Name:  "rooms",
				Usage: "show, delete and configure rooms",
				Subcommands: []*cli.Command{
					leaf(&cli.Command{Name: "show", ArgsUsage: "ROOM", Usage: "a room's state and members", Action: adminAction(cmdRoomsShow)}),
					leaf(&cli.Command{Name: "delete", ArgsUsage: "ROOM", Usage: "delete a room: its history and members go; its next use starts a new epoch",
						Action: adminAction(cmdRoomsDelete)}),
					leaf(&cli.Command{Name: "config", ArgsUsage: "ROOM [--history-max-count N] [--history-max-age D] ...",
						Usage:  "change a room's retention and rules (0 means no limit; a missing room is created)",
						Flags:  roomConfigFlags(),
						Action: adminAction(cmdRoomsConfig)}),
				},
			},
			{
				Name:  "namespaces",
				Usage: "room options by name prefix: the longest matching prefix gives a room its config; a room's own config overrides it",
				Subcommands: []*cli.Command{
					leaf(&cli.Command{Name: "list", Usage: "the cluster's namespace rules", Action: adminAction(cmdNamespacesList)}),
					leaf(&cli.Command{Name: "set", ArgsUsage: "PREFIX [--history-max-count N] [--client-publish=false] ...",
						Usage:  `add or replace the rule for PREFIX ("" for rooms no other prefix matches); fields left out have their defaults`,
						Flags:  roomConfigFlags(),
						Action: adminAction(cmdNamespacesSet)}),
					leaf(&cli.Command{Name: "delete", ArgsUsage: "PREFIX", Usage: "remove the rule for PREFIX",
						Action: adminAction(cmdNamespacesDelete)}),
				},
			},
			leaf(&cli.Command{Name: "snapshot", Usage: "make the node at --addr snapshot one group or all of its groups now",
				Flags:  []cli.Flag{&cli.Uint64Flag{Name: "group", Usage: "only this group (0 is the meta group)"}},
				Action: adminAction(cmdSnapshot)}),
			{
				Name:  "jobs",
				Usage: "list, show and cancel the background jobs of the node at --addr",
				Subcommands: []*cli.Command{
					leaf(&cli.Command{Name: "list", Usage: "jobs the node remembers", Action: adminAction(cmdJobsList)}),
					leaf(&cli.Command{Name: "show", ArgsUsage: "JOB_ID", Usage: "one job", Action: adminAction(cmdJobsShow)}),
					leaf(&cli.Command{Name: "cancel", ArgsUsage: "JOB_ID", Usage: "stop a running job", Action: adminAction(cmdJobsCancel)}),
				},
			},
			leaf(&cli.Command{Name: "backup", Usage: "OFFLINE: archive a stopped node's data directory (tar.gz with a manifest)",
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "data-dir", Usage: "the stopped node's data directory"},
					&cli.StringFlag{Name: "out", Usage: "archive to write (must not exist)"},
				},
				Action: adminAction(cmdBackup)}),
			leaf(&cli.Command{Name: "restore", Usage: "OFFLINE: unpack a backup into a new, empty data directory",
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "in", Usage: "archive made by herald admin backup"},
					&cli.StringFlag{Name: "data-dir", Usage: "directory to create (must not exist or be empty)"},
				},
				Action: adminAction(cmdRestore)}),
		},
	}
}

// roomConfigFlags are the options of a room's config, for rooms config and
// namespaces set.
func roomConfigFlags() []cli.Flag {
	return []cli.Flag{
		&cli.Uint64Flag{Name: "history-max-count", Usage: "events the room keeps"},
		&cli.DurationFlag{Name: "history-max-age", Usage: "how long events are kept"},
		&cli.Uint64Flag{Name: "key-window-count", Usage: "idempotency keys remembered"},
		&cli.DurationFlag{Name: "key-window-age", Usage: "how long idempotency keys are remembered"},
		&cli.BoolFlag{Name: "members-only", Usage: "only members may publish (--members-only=false to open)"},
		&cli.BoolFlag{Name: "client-publish", Usage: "sockets may publish (--client-publish=false: only the backend may)"},
		&cli.BoolFlag{Name: "presence-history", Usage: "joins and leaves go into the history (--presence-history=false: live subscribers only)"},
		&cli.Uint64Flag{Name: "max-members", Usage: "members the room takes"},
	}
}

func jobFlags() []cli.Flag {
	return []cli.Flag{
		&cli.BoolFlag{Name: "detach", Usage: "start the job, print it and return without waiting"},
		&cli.DurationFlag{Name: "job-timeout", Value: time.Hour, Usage: "bound on the whole job, enforced by the node"},
	}
}

// leaf makes a command parse its own flags, so that flags may follow
// positional arguments ("groups move 3 --from n1 --to n2"), which urfave/cli
// v2 does not allow, and so that the admin command's flags work there too.
func leaf(c *cli.Command) *cli.Command {
	c.SkipFlagParsing = true
	c.HideHelpCommand = true
	return c
}

// usageError is a mistake on the command line.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...)}
}

var errHelpShown = errors.New("help shown")

// findFlag finds the flag called name on c's command or an ancestor's.
func findFlag(c *cli.Context, name string) (cli.Flag, bool) {
	for _, ctx := range c.Lineage() {
		if ctx.Command == nil {
			continue
		}
		for _, f := range ctx.Command.Flags {
			if slices.Contains(f.Names(), name) {
				return f, true
			}
		}
	}
	return nil, false
}

// parseArgs applies the flags among a leaf command's arguments and returns
// the positional ones.
func parseArgs(c *cli.Context) ([]string, error) {
	in := c.Args().Slice()
	var pos []string
	for i := 0; i < len(in); i++ {
		a := in[i]
		switch {
		case a == "--":
			return append(pos, in[i+1:]...), nil
		case a == "-h" || a == "--help" || a == "-help":
			parent := c
			if l := c.Lineage(); len(l) > 1 {
				parent = l[1]
			}
			if err := cli.ShowCommandHelp(parent, c.Command.Name); err != nil {
				return nil, err
			}
			return nil, errHelpShown
		case !strings.HasPrefix(a, "-") || a == "-":
			pos = append(pos, a)
			continue
		}
		name, val, hasVal := strings.Cut(strings.TrimLeft(a, "-"), "=")
		f, ok := findFlag(c, name)
		if !ok {
			return nil, usagef("unknown flag %s (see --help)", a)
		}
		if _, isBool := f.(*cli.BoolFlag); isBool {
			if !hasVal {
				val = "true"
			}
		} else if !hasVal {
			if i+1 >= len(in) {
				return nil, usagef("flag %s needs a value", a)
			}
			i++
			val = in[i]
		}
		if err := c.Set(name, val); err != nil {
			return nil, usagef("flag %s: %v", a, err)
		}
	}
	return pos, nil
}

// session is what an admin subcommand works with.
type session struct {
	c       *cli.Context
	ctx     context.Context // ends on Ctrl-C
	args    []string
	client  *admin.Client
	json    bool
	timeout time.Duration
	out     io.Writer
	errOut  io.Writer
}

// request bounds one API request by --timeout.
func (s *session) request() (context.Context, context.CancelFunc) {
	return context.WithTimeout(s.ctx, s.timeout)
}

// show makes one request within the request timeout and prints its
// answer (see print).
func show[T any](s *session, call func(context.Context) (T, error), table func(T)) error {
	ctx, cancel := s.request()
	defer cancel()
	v, err := call(ctx)
	if err != nil {
		return err
	}
	return s.print(v, func() { table(v) })
}

// print writes v as indented JSON with --json, else calls table.
func (s *session) print(v any, table func()) error {
	if s.json {
		b, err := json.MarshalIndent(v, "", "  ")
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(s.out, "%s\n", b)
		return err
	}
	table()
	return nil
}

func (s *session) arg(what string) (string, error) {
	if len(s.args) != 1 {
		return "", usagef("%s needs exactly one argument: %s (got %d)", s.c.Command.Name, what, len(s.args))
	}
	return s.args[0], nil
}

func (s *session) groupArg() (uint64, error) {
	a, err := s.arg("GROUP")
	if err != nil {
		return 0, err
	}
	g, err := strconv.ParseUint(a, 10, 64)
	if err != nil {
		return 0, usagef("group %q is not a number", a)
	}
	return g, nil
}

// adminAction runs fn with a session and turns its error into a message on
// stderr and an exit code: 1 for errors, 2 for usage mistakes, 130 when
// interrupted.
func adminAction(fn func(*session) error) cli.ActionFunc {
	return func(c *cli.Context) error {
		ctx, stop := signal.NotifyContext(c.Context, os.Interrupt, syscall.SIGTERM)
		defer stop()
		s := &session{c: c, ctx: ctx, out: c.App.Writer, errOut: c.App.ErrWriter}
		if s.errOut == nil {
			s.errOut = os.Stderr
		}
		var err error
		if s.args, err = parseArgs(c); err == nil {
			s.json, s.timeout = c.Bool("json"), c.Duration("timeout")
			if s.timeout <= 0 {
				err = usagef("--timeout must be positive")
			}
		}
		if err == nil {
			s.client = admin.NewClient(c.String("addr"), c.String("token"))
			err = fn(s)
		}
		return s.exit(err)
	}
}

// exit reports err and returns what makes the process end with the right
// code; the message is already printed, so the returned error has none.
func (s *session) exit(err error) error {
	if err == nil || errors.Is(err, errHelpShown) {
		return nil
	}
	code := exitError
	var ue *usageError
	var ae *admin.APIError
	var ie *interrupted
	switch {
	case errors.As(err, &ie):
		code = exitInterrupted
		fmt.Fprintf(s.errOut, "herald admin: %v\n", err)
	case errors.As(err, &ue):
		code = exitUsage
		fmt.Fprintf(s.errOut, "herald admin %s: %v\n", s.c.Command.Name, err)
	case errors.As(err, &ae):
		fmt.Fprintf(s.errOut, "herald admin: %s\n  (HTTP %d, %s)\n", ae.Message, ae.Status, ae.Code)
		if ae.Status == 401 || ae.Status == 403 {
			fmt.Fprintln(s.errOut, "  pass the node's admin token with --token or HERALD_ADMIN_TOKEN")
		}
	case isUnreachable(err):
		fmt.Fprintf(s.errOut, "herald admin: cannot reach the admin API at %s: %v\n  check --addr (or HERALD_ADMIN_ADDR) and that the node runs\n", s.c.String("addr"), err)
	default:
		fmt.Fprintf(s.errOut, "herald admin: %v\n", err)
	}
	return cli.Exit("", code)
}

func isUnreachable(err error) bool {
	var ue *url.Error
	var ne net.Error
	return errors.As(err, &ue) || errors.As(err, &ne)
}

// interrupted says the operator stopped a command with Ctrl-C.
type interrupted struct{ msg string }

func (e *interrupted) Error() string { return e.msg }
