package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	api "github.com/heraldhq/herald/client/serverapi"
	"github.com/heraldhq/herald/serverapi"
)

// apiCommand is "herald api": an application backend's ops, through a
// node's server API (docs/server-api.md).
func apiCommand() *cli.Command {
	stale := &cli.BoolFlag{Name: "stale", Usage: "let any replica answer, maybe behind (default: linearizable)"}
	return &cli.Command{
		Name:  "api",
		Usage: "publish to rooms, read them and act on users' sockets through the server API",
		Description: "Commands call the server API on nodes' client ports (--url, repeatable: the next is tried when one fails)\n" +
			"with an API key (--api-key or HERALD_API_KEY). Global flags go before the subcommand:\n" +
			"herald api --url http://10.0.0.5:7071 publish lobby '{\"text\":\"hi\"}' --key order-42",
		Flags: []cli.Flag{
			&cli.StringSliceFlag{Name: "url", Value: cli.NewStringSlice("http://127.0.0.1:7071"), EnvVars: []string{"HERALD_API_URL"},
				Usage: "base URL of a node's client port, repeatable"},
			&cli.StringFlag{Name: "api-key", EnvVars: []string{"HERALD_API_KEY"}, Usage: "API key (of a comma list, the first)"},
			&cli.BoolFlag{Name: "json", Usage: "print the API's JSON reply"},
			&cli.DurationFlag{Name: "timeout", Value: 30 * time.Second, Usage: "bound on the call, retries included"},
		},
		Subcommands: append([]*cli.Command{
			leaf(&cli.Command{Name: "publish", ArgsUsage: "ROOM DATA [--key K] [--expect-seq N] [--as MEMBER]",
				Usage: "publish DATA (a JSON value; quote strings: '\"hi\"') to ROOM once committed",
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "key", Usage: "idempotency key: a repeat returns the first publish's seq"},
					&cli.StringFlag{Name: "expect-seq", Usage: "publish only if the room's last seq is this"},
					&cli.StringFlag{Name: "as", Usage: "member the message is from (default " + serverapi.DefaultMember + ")"},
				},
				Action: apiAction(cmdAPIPublish)}),
			leaf(&cli.Command{Name: "broadcast", ArgsUsage: "DATA ROOM... [--key K] [--as MEMBER]",
				Usage: "publish DATA to every ROOM, each once committed",
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "key", Usage: "idempotency key of every room's publish"},
					&cli.StringFlag{Name: "as", Usage: "member the message is from"},
				},
				Action: apiAction(cmdAPIBroadcast)}),
			leaf(&cli.Command{Name: "history", ArgsUsage: "ROOM [--from-seq N] [--limit N] [--stale]", Usage: "a page of a room's events",
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "from-seq", Usage: "first seq (default: the first retained)"},
					&cli.IntFlag{Name: "limit", Usage: "most events (default 100, at most 1000)"},
					stale,
				},
				Action: apiAction(cmdAPIHistory)}),
			leaf(&cli.Command{Name: "members", ArgsUsage: "ROOM [--stale]", Usage: "a room's members", Flags: []cli.Flag{stale},
				Action: apiAction(cmdAPIMembers)}),
			leaf(&cli.Command{Name: "presence-stats", ArgsUsage: "ROOM [--stale]", Usage: "count a room's members", Flags: []cli.Flag{stale},
				Action: apiAction(cmdAPIPresenceStats)}),
			leaf(&cli.Command{Name: "rooms", ArgsUsage: "[--prefix P] [--after CURSOR] [--limit N] [--stale]", Usage: "list rooms by name",
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "prefix", Usage: "only rooms whose names start with this"},
					&cli.StringFlag{Name: "after", Usage: "cursor: the previous page's next"},
					&cli.IntFlag{Name: "limit", Usage: "most rooms (default 100, at most 1000)"},
					stale,
				},
				Action: apiAction(cmdAPIRooms)}),
			leaf(&cli.Command{Name: "info", Usage: "the cluster's nodes and their URLs", Action: apiAction(cmdAPIInfo)}),
		}, apiUserCommands()...),
	}
}

// apiSession is what an api subcommand works with.
type apiSession struct {
	c      *cli.Context
	ctx    context.Context // ends on Ctrl-C or --timeout
	args   []string
	client *api.Client
	json   bool
	out    io.Writer
}

// apiAction runs fn and turns its error into a message on stderr and the
// exit codes of herald admin.
func apiAction(fn func(*apiSession) error) cli.ActionFunc {
	return func(c *cli.Context) error {
		ctx, stop := signal.NotifyContext(c.Context, os.Interrupt, syscall.SIGTERM)
		defer stop()
		errOut := c.App.ErrWriter
		if errOut == nil {
			errOut = os.Stderr
		}
		s := &apiSession{c: c, out: c.App.Writer}
		var err error
		if s.args, err = parseArgs(c); err == nil {
			err = s.setup(ctx, fn)
		}
		if err == nil || errors.Is(err, errHelpShown) {
			return nil
		}
		code := exitError
		var ue *usageError
		var ae *api.Error
		switch {
		case errors.As(err, &ue):
			code = exitUsage
			fmt.Fprintf(errOut, "herald api %s: %v\n", c.Command.Name, err)
		case errors.As(err, &ae):
			fmt.Fprintf(errOut, "herald api %s: %s\n  (%s, retryable: %v)\n", c.Command.Name, ae.Message, ae.Code, ae.Retryable)
			if ae.Status == 401 || ae.Status == 403 {
				fmt.Fprintln(errOut, "  pass an API key of the node with --api-key or HERALD_API_KEY")
			}
		case ctx.Err() != nil:
			code = exitInterrupted
			fmt.Fprintf(errOut, "herald api %s: interrupted: %v\n", c.Command.Name, err)
		default:
			fmt.Fprintf(errOut, "herald api %s: %v\n", c.Command.Name, err)
		}
		return cli.Exit("", code)
	}
}

func (s *apiSession) setup(ctx context.Context, fn func(*apiSession) error) error {
	timeout := s.c.Duration("timeout")
	if timeout <= 0 {
		return usagef("--timeout must be positive")
	}
	var key string
	if keys := serverapi.ParseKeys(s.c.String("api-key")); len(keys) > 0 {
		key = keys[0]
	}
	var err error
	if s.client, err = api.New(key, s.c.StringSlice("url")...); err != nil {
		return usagef("%v", err)
	}
	s.json = s.c.Bool("json")
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	s.ctx = ctx
	return fn(s)
}

// print writes v as indented JSON with --json, else calls text.
func (s *apiSession) print(v any, text func(w io.Writer)) error {
	if s.json {
		b, err := json.MarshalIndent(v, "", "  ")
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(s.out, "%s\n", b)
		return err
	}
	tw := tabwriter.NewWriter(s.out, 0, 4, 2, ' ', 0)
	text(tw)
	return tw.Flush()
}

func (s *apiSession) wantArgs(n int, what string) error {
	if len(s.args) != n {
		return usagef("%s needs %s (got %d arguments)", s.c.Command.Name, what, len(s.args))
	}
	return nil
}

func jsonArg(a string) (json.RawMessage, error) {
	if !json.Valid([]byte(a)) {
		return nil, usagef("DATA %q is not JSON; a string needs quotes: '\"hi\"'", a)
	}
	return json.RawMessage(a), nil
}

func seqFlag(s *apiSession, name string) (*uint64, error) {
	v := s.c.String(name)
	if v == "" {
		return nil, nil
	}
	n, err := strconv.ParseUint(v, 10, 64)
	if err != nil {
		return nil, usagef("--%s %q is not a seq", name, v)
	}
	return &n, nil
}

func consistency(s *apiSession) string {
	if s.c.Bool("stale") {
		return api.Stale
	}
	return ""
}

func cmdAPIPublish(s *apiSession) error {
	if err := s.wantArgs(2, "ROOM DATA"); err != nil {
		return err
	}
	data, err := jsonArg(s.args[1])
	if err != nil {
		return err
	}
	expect, err := seqFlag(s, "expect-seq")
	if err != nil {
		return err
	}
	res, err := s.client.Publish(s.ctx, api.PublishRequest{Room: s.args[0], Data: data, Key: s.c.String("key"), ExpectSeq: expect, As: s.c.String("as")})
	if err != nil {
		return err
	}
	return s.print(res, func(w io.Writer) {
		dup := ""
		if res.Duplicate {
			dup = " (duplicate: the key was published before)"
		}
		fmt.Fprintf(w, "published to %s at seq %d, epoch %s%s\n", s.args[0], res.Seq, res.Epoch, dup)
	})
}

func cmdAPIBroadcast(s *apiSession) error {
	if len(s.args) < 2 {
		return usagef("broadcast needs DATA ROOM... (got %d arguments)", len(s.args))
	}
	data, err := jsonArg(s.args[0])
	if err != nil {
		return err
	}
	res, err := s.client.Broadcast(s.ctx, api.BroadcastRequest{Rooms: s.args[1:], Data: data, Key: s.c.String("key"), As: s.c.String("as")})
	if err != nil {
		return err
	}
	failed := 0
	for _, r := range res.Results {
		if r.Error != nil {
			failed++
		}
	}
	err = s.print(res, func(w io.Writer) {
		fmt.Fprintln(w, "ROOM\tSEQ\tEPOCH\tRESULT")
		for _, r := range res.Results {
			switch {
			case r.Error != nil:
				fmt.Fprintf(w, "%s\t-\t-\t%s: %s\n", r.Room, r.Error.Code, r.Error.Message)
			case r.Duplicate:
				fmt.Fprintf(w, "%s\t%d\t%s\tduplicate\n", r.Room, r.Seq, r.Epoch)
			default:
				fmt.Fprintf(w, "%s\t%d\t%s\tpublished\n", r.Room, r.Seq, r.Epoch)
			}
		}
	})
	if err == nil && failed > 0 {
		err = fmt.Errorf("%d of %d rooms failed; run it again with the same --key to retry them", failed, len(res.Results))
	}
	return err
}

func cmdAPIHistory(s *apiSession) error {
	if err := s.wantArgs(1, "ROOM"); err != nil {
		return err
	}
	from, err := seqFlag(s, "from-seq")
	if err != nil {
		return err
	}
	res, err := s.client.History(s.ctx, api.HistoryRequest{Room: s.args[0], FromSeq: from, Limit: s.c.Int("limit"), Consistency: consistency(s)})
	if err != nil {
		return err
	}
	return s.print(res, func(w io.Writer) {
		fmt.Fprintln(w, "SEQ\tTIME\tTYPE\tMEMBER\tDATA")
		for _, ev := range res.Events {
			fmt.Fprintf(w, "%d\t%s\t%s\t%s\t%s\n", ev.Seq, ev.TS.Format(time.RFC3339), ev.Type, ev.Member, ev.Data)
		}
		fmt.Fprintf(w, "\nepoch %s, retained seqs %d..%d", res.Epoch, res.FirstSeq, res.LastSeq)
		if res.More && len(res.Events) > 0 {
			fmt.Fprintf(w, "; more from --from-seq %d", res.Events[len(res.Events)-1].Seq+1)
		}
		fmt.Fprintln(w)
	})
}

func cmdAPIMembers(s *apiSession) error {
	if err := s.wantArgs(1, "ROOM"); err != nil {
		return err
	}
	res, err := s.client.Members(s.ctx, api.RoomRead{Room: s.args[0], Consistency: consistency(s)})
	if err != nil {
		return err
	}
	return s.print(res, func(w io.Writer) {
		fmt.Fprintln(w, "MEMBER\tJOINED SEQ\tMETA")
		for _, m := range res.Members {
			fmt.Fprintf(w, "%s\t%d\t%s\n", m.Member, m.JoinedSeq, m.Meta)
		}
		fmt.Fprintf(w, "\n%d members at seq %d\n", len(res.Members), res.Seq)
	})
}

func cmdAPIPresenceStats(s *apiSession) error {
	if err := s.wantArgs(1, "ROOM"); err != nil {
		return err
	}
	res, err := s.client.PresenceStats(s.ctx, api.RoomRead{Room: s.args[0], Consistency: consistency(s)})
	if err != nil {
		return err
	}
	return s.print(res, func(w io.Writer) {
		fmt.Fprintf(w, "%d members (%d held by sockets) at seq %d\n", res.Members, res.SocketMembers, res.Seq)
	})
}

func cmdAPIRooms(s *apiSession) error {
	if err := s.wantArgs(0, "no arguments"); err != nil {
		return err
	}
	res, err := s.client.Rooms(s.ctx, api.RoomsRequest{Prefix: s.c.String("prefix"), After: s.c.String("after"), Limit: s.c.Int("limit"), Consistency: consistency(s)})
	if err != nil {
		return err
	}
	return s.print(res, func(w io.Writer) {
		fmt.Fprintln(w, "ROOM\tEPOCH\tLAST SEQ\tMEMBERS")
		for _, r := range res.Rooms {
			fmt.Fprintf(w, "%s\t%s\t%d\t%d\n", r.Room, r.Epoch, r.LastSeq, r.MemberCount)
		}
		if res.Next != "" {
			fmt.Fprintf(w, "\nmore: --after %q\n", res.Next)
		}
	})
}

func cmdAPIInfo(s *apiSession) error {
	if err := s.wantArgs(0, "no arguments"); err != nil {
		return err
	}
	res, err := s.client.Info(s.ctx)
	if err != nil {
		return err
	}
	return s.print(res, func(w io.Writer) {
		fmt.Fprintf(w, "cluster %s, answered by %s\n\n", res.ClusterID, res.Node)
		fmt.Fprintln(w, "NODE\tSTATE\tCLIENT URL\tWEBSOCKET URL")
		for _, n := range res.Nodes {
			state := n.State
			if n.LeaseExpired {
				state += " (lease expired)"
			}
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", n.ID, state, n.ClientURL, n.WebsocketURL)
		}
	})
}
