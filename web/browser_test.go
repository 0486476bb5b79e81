package web_test

// Browser tests: the pages, served by the nodes of a real in-process
// cluster, driven in headless Chromium. Without Chromium they skip, except
// in CI (the CI variable set), where they fail.

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"

	heraldjs "github.com/heraldhq/herald/client/js"
	"github.com/heraldhq/herald/internal/testcluster"
	"github.com/heraldhq/herald/web"
)

var update = flag.Bool("update", false, "write the pages' screenshots to docs/img")

func findChromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") != "" {
		t.Fatal("chromium is not installed: the browser tests need it in CI (.ci/run installs Debian's chromium)")
	}
	t.Skip("chromium is not installed; the browser tests need it")
	return ""
}

// browser is one headless Chromium with a fresh profile, killed when the
// test ends.
type browser struct {
	t    *testing.T
	root context.Context

	mu   sync.Mutex
	done bool // the test is over: listeners must not log any more
}

func newBrowser(t *testing.T) *browser {
	t.Helper()
	path := findChromium(t)
	b := &browser{t: t}
	actx, acancel := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(path),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1100, 860),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		// Tabs in the background must keep their timers and sockets
		// going as a visible one would.
		chromedp.Flag("disable-background-timer-throttling", true),
		chromedp.Flag("disable-renderer-backgrounding", true),
		chromedp.Flag("disable-backgrounding-occluded-windows", true),
		// Two tabs of one machine reach each other over loopback, with
		// plain IP candidates rather than mDNS names.
		chromedp.Flag("allow-loopback-in-peer-connection", true),
		chromedp.Flag("disable-features", "WebRtcHideLocalIpsWithMdns"),
	)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() {
		b.mu.Lock()
		b.done = true
		b.mu.Unlock()
		cancel()
		acancel() // kills the browser and waits for it
	})
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	b.root = ctx
	return b
}

func (b *browser) logf(format string, args ...any) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.done {
		b.t.Logf(format, args...)
	}
}

// tab opens a new tab whose console messages and uncaught exceptions go to
// the test log.
func (b *browser) tab(name string) context.Context {
	ctx, cancel := chromedp.NewContext(b.root, chromedp.WithListener(func(ev any) {
		switch ev := ev.(type) {
		case *runtime.EventConsoleAPICalled:
			var parts []string
			for _, a := range ev.Args {
				parts = append(parts, strings.Trim(string(a.Value), `"`)+a.Description)
			}
			b.logf("%s console.%s: %s", name, ev.Type, strings.Join(parts, " "))
		case *runtime.EventExceptionThrown:
			msg := ev.ExceptionDetails.Text
			if ev.ExceptionDetails.Exception != nil {
				msg += " " + ev.ExceptionDetails.Exception.Description
			}
			b.logf("%s exception: %s", name, msg)
		}
	}))
	b.t.Cleanup(cancel)
	if err := chromedp.Do(ctx); err != nil {
		b.t.Fatalf("open tab %s: %v", name, err)
	}
	return ctx
}

// do runs actions on a tab within d.
func do(t *testing.T, ctx context.Context, d time.Duration, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	c, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	if err := chromedp.Do(c, actions...); err != nil {
		t.Fatalf("browser: %v", err)
	}
}

func eval[T any](t *testing.T, ctx context.Context, expr string) T {
	t.Helper()
	c, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	v, err := chromedp.Run(c, chromedp.Evaluate[T](expr))
	if err != nil {
		t.Fatalf("evaluate %s: %v", expr, err)
	}
	return v
}

// waitJS waits until expr is true on the tab, failing with what the page
// shows if it is not within d.
func waitJS(t *testing.T, ctx context.Context, what, expr string, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		if eval[bool](t, ctx, "!!("+expr+")") {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s; the page shows:\n%s", d, what,
				eval[string](t, ctx, `document.querySelector('main').innerText`))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// startCluster starts a three-node cluster whose nodes serve the pages,
// mounting them where the node does not already.
func startCluster(t *testing.T) *testcluster.Cluster {
	t.Helper()
	c := testcluster.Start(t, testcluster.Options{})
	servePages(t, c)
	return c
}

// servePages mounts the pages on every node of c that does not serve them.
func servePages(t *testing.T, c *testcluster.Cluster) {
	t.Helper()
	for i := range c.Len() {
		res, err := http.Get(c.HTTP(i) + "/herald.js")
		if err != nil {
			t.Fatal(err)
		}
		_ = res.Body.Close()
		if res.StatusCode == http.StatusOK {
			continue
		}
		n := c.Node(i)
		web.Mount(n.Front(), web.ClusterNodes(n.Host()))
	}
}

// event is one line of the chat's message list.
type event struct {
	Seq    int    `json:"seq"`
	Type   string `json:"type"`
	Member string `json:"member"`
	Text   string `json:"text"`
}

func (e event) String() string { return fmt.Sprintf("#%d %s %s %q", e.Seq, e.Type, e.Member, e.Text) }

func chatEvents(t *testing.T, tab context.Context) []event {
	t.Helper()
	raw := eval[string](t, tab, `JSON.stringify([...document.querySelectorAll('#messages li[data-seq]')].map(li => ({
		seq: Number(li.dataset.seq), type: li.dataset.type, member: li.dataset.member,
		text: li.querySelector('.text').textContent})))`)
	var evs []event
	if err := json.Unmarshal([]byte(raw), &evs); err != nil {
		t.Fatal(err)
	}
	return evs
}

// checkOrder fails unless the seqs go up one by one: no gap, no duplicate.
func checkOrder(t *testing.T, who string, evs []event) {
	t.Helper()
	for i := 1; i < len(evs); i++ {
		if evs[i].Seq != evs[i-1].Seq+1 {
			t.Fatalf("%s: seq %d follows %d (a gap or a duplicate): %v", who, evs[i].Seq, evs[i-1].Seq, evs)
		}
	}
}

func countText(evs []event, text string) int {
	n := 0
	for _, e := range evs {
		if e.Type == "message" && e.Text == text {
			n++
		}
	}
	return n
}

func js(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// openPage opens the page at url and enters as name in room. Enter in a
// field submits the form: the pages work from the keyboard.
func openPage(t *testing.T, tab context.Context, url, name, room string) {
	t.Helper()
	do(t, tab, 20*time.Second,
		chromedp.Navigate(url),
		chromedp.WaitVisible(chromedp.CSS("#name")),
		chromedp.SetValue(chromedp.CSS("#room"), room),
		chromedp.SendKeys(chromedp.CSS("#name"), name+kb.Enter),
	)
}

func openChat(t *testing.T, tab context.Context, base, name, room string) {
	t.Helper()
	openPage(t, tab, base+"/", name, room)
	waitJS(t, tab, name+" in the member list",
		`document.querySelector('#conn').dataset.state === 'connected' &&
		 document.querySelector('#members li[data-member='+`+js(js(name))+`+']')`, 20*time.Second)
}

// waitMoved waits until the page on tab is connected to a node other
// than from.
func waitMoved(t *testing.T, tab context.Context, name, from string) {
	t.Helper()
	waitJS(t, tab, name+"'s page on another node",
		`(s => s.dataset.state === 'connected' && s.dataset.node !== `+js(from)+`)(document.querySelector('#conn'))`, 20*time.Second)
}

func say(t *testing.T, tab context.Context, text string) {
	t.Helper()
	do(t, tab, 10*time.Second, chromedp.SendKeys(chromedp.CSS("#text"), text+kb.Enter))
}

func hasMessages(texts ...string) string {
	var conds []string
	for _, s := range texts {
		conds = append(conds, `[...document.querySelectorAll('#messages li[data-type=message] .text')].some(e => e.textContent === `+js(s)+`)`)
	}
	return strings.Join(conds, " && ")
}

func members(t *testing.T, tab context.Context) []string {
	t.Helper()
	return eval[[]string](t, tab, `[...document.querySelectorAll('#members li')].map(li => li.dataset.member)`)
}

// twoChats starts a cluster and a browser, and opens the chat in room for
// alice on the first node's page and bob on the second's.
func twoChats(t *testing.T, room string) (c *testcluster.Cluster, b *browser, alice, bob context.Context) {
	t.Helper()
	findChromium(t)
	c = startCluster(t)
	b = newBrowser(t)
	alice, bob = b.tab("alice"), b.tab("bob")
	openChat(t, alice, c.HTTP(0), "alice", room)
	openChat(t, bob, c.HTTP(1), "bob", room)
	return c, b, alice, bob
}

func TestChatTwoPages(t *testing.T) {
	_, _, alice, bob := twoChats(t, "lobby")
	waitJS(t, alice, "bob's join in alice's member list", `document.querySelector('#members li[data-member=bob]')`, 10*time.Second)
	if got := members(t, bob); !slices.Equal(got, []string{"alice", "bob"}) {
		t.Fatalf("bob's member list: %v", got)
	}
	if got := eval[string](t, alice, `document.querySelector('#conn').dataset.node`); got != "n1" {
		t.Errorf("alice's page is on %q, want n1", got)
	}
	if got := eval[string](t, bob, `document.querySelector('#conn').dataset.node`); got != "n2" {
		t.Errorf("bob's page is on %q, want n2", got)
	}

	texts := []string{"hello from alice", "hi from bob", "one", "two", "three"}
	say(t, alice, texts[0])
	say(t, bob, texts[1])
	for _, s := range texts[2:] {
		say(t, alice, s)
	}
	waitJS(t, alice, "every message on alice's page", hasMessages(texts...), 15*time.Second)
	waitJS(t, bob, "every message on bob's page", hasMessages(texts...), 15*time.Second)

	a, bb := chatEvents(t, alice), chatEvents(t, bob)
	checkOrder(t, "alice", a)
	checkOrder(t, "bob", bb)
	if !slices.Equal(a, bb) {
		t.Fatalf("the pages disagree:\nalice %v\nbob   %v", a, bb)
	}
	for _, s := range texts {
		if n := countText(a, s); n != 1 {
			t.Errorf("%q shown %d times", s, n)
		}
	}

	// Bob leaves: alice's list updates from the leave event.
	do(t, bob, 10*time.Second, chromedp.Click(chromedp.CSS("#leave")))
	waitJS(t, alice, "bob gone from alice's member list",
		`!document.querySelector('#members li[data-member=bob]') && document.querySelector('#messages li[data-type=leave][data-member=bob]')`,
		10*time.Second)
	if got := members(t, alice); !slices.Equal(got, []string{"alice"}) {
		t.Fatalf("alice's member list after bob left: %v", got)
	}
}

func TestChatSurvivesItsNodeDying(t *testing.T) {
	c, _, alice, bob := twoChats(t, "failover")
	say(t, alice, "before 1")
	say(t, bob, "before 2")
	waitJS(t, alice, "the first messages", hasMessages("before 1", "before 2"), 10*time.Second)

	// Alice's node dies; she types while her page reconnects.
	c.Crash(0)
	say(t, alice, "during the outage")
	say(t, bob, "bob during the outage")
	waitMoved(t, alice, "alice", "n1")
	say(t, alice, "after")

	all := []string{"before 1", "before 2", "during the outage", "bob during the outage", "after"}
	waitJS(t, alice, "every message on alice's page", hasMessages(all...), 20*time.Second)
	waitJS(t, bob, "every message on bob's page", hasMessages(all...), 20*time.Second)
	waitJS(t, alice, "alice's outbox empty", `document.querySelector('#outbox').children.length === 0`, 10*time.Second)

	a, bb := chatEvents(t, alice), chatEvents(t, bob)
	checkOrder(t, "alice", a)
	checkOrder(t, "bob", bb)
	for _, s := range all {
		if n := countText(a, s); n != 1 {
			t.Errorf("alice's page shows %q %d times", s, n)
		}
		if n := countText(bb, s); n != 1 {
			t.Errorf("bob's page shows %q %d times", s, n)
		}
	}
	// Both started at seq 1: the same events, in the same order.
	if !slices.Equal(a, bb) {
		t.Errorf("the pages disagree:\nalice %v\nbob   %v", a, bb)
	}
	log := eval[string](t, alice, `document.querySelector('#connlog').innerText`)
	if !strings.Contains(log, "resumed failover from #") {
		t.Errorf("alice's connection log does not show the resume:\n%s", log)
	}
	if got := members(t, bob); !slices.Equal(got, []string{"alice", "bob"}) {
		t.Errorf("bob's member list after alice moved: %v", got)
	}
}

func openCall(t *testing.T, tab context.Context, base, name, room string) {
	t.Helper()
	openPage(t, tab, base+"/call", name, room)
	waitJS(t, tab, name+" connected to Herald", `document.querySelector('#conn').dataset.state === 'connected'`, 20*time.Second)
}

// caller is one person in a call: the node whose page they use and what
// they say to the other.
type caller struct {
	name string
	node int
	says string
}

// call opens the call page in room for first and second, each in a tab of
// b, waits until their data channel is open, and has first then second
// say their line to the other over it. It returns their tabs.
func call(t *testing.T, c *testcluster.Cluster, b *browser, room string, first, second caller) (context.Context, context.Context) {
	t.Helper()
	tabs := [2]context.Context{b.tab(first.name), b.tab(second.name)}
	for i, p := range []caller{first, second} {
		openCall(t, tabs[i], c.HTTP(p.node), p.name, room)
	}
	for i, p := range []caller{first, second} {
		waitJS(t, tabs[i], p.name+"'s data channel open", `document.querySelector('#peer-state').dataset.state === 'connected'`, 30*time.Second)
	}
	for i, p := range []caller{first, second} {
		do(t, tabs[i], 10*time.Second, chromedp.SendKeys(chromedp.CSS("#p2p-text"), p.says+kb.Enter))
		waitJS(t, tabs[1-i], p.name+"'s message over the data channel",
			`[...document.querySelectorAll('#p2p li')].some(li => li.innerText.includes(`+js(p.says)+`))`, 10*time.Second)
	}
	return tabs[0], tabs[1]
}

func TestCallOpensADataChannel(t *testing.T) {
	findChromium(t)
	c := startCluster(t)
	b := newBrowser(t)
	alice, bob := call(t, c, b, "call-1",
		caller{name: "alice", node: 0, says: "hello over the data channel"},
		caller{name: "bob", node: 2, says: "hello back"})

	// Offer, answer and candidates went through the room, in one order.
	// Both tabs offered as they saw each other; expect_seq let one offer
	// land.
	landed := 0
	for _, tab := range []context.Context{alice, bob} {
		log := eval[string](t, tab, `document.querySelector('#signals').innerText`)
		if !strings.Contains(log, "offer") || !strings.Contains(log, "answer") || !strings.Contains(log, "ICE candidate") {
			t.Errorf("the signaling log lacks offer, answer or candidates:\n%s", log)
		}
		landed += strings.Count(log, "landed (expect_seq")
		t.Logf("signaling:\n%s", log)
	}
	if landed != 1 {
		t.Errorf("%d offers landed, want 1", landed)
	}
}

// TestClientUnitTestsInBrowser runs client/js/herald.test.js in Chromium,
// with stand-ins for node:test and node:assert.
func TestClientUnitTestsInBrowser(t *testing.T) {
	b := newBrowser(t)
	mux := http.NewServeMux()
	serve := func(pattern, file string) {
		mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Cache-Control", "no-store")
			if strings.HasSuffix(file, ".js") {
				w.Header().Set("Content-Type", "text/javascript; charset=utf-8")
			}
			http.ServeFile(w, r, file)
		})
	}
	serve("GET /{$}", "testdata/unit/index.html")
	serve("GET /shim/test.js", "testdata/unit/test.js")
	serve("GET /shim/assert.js", "testdata/unit/assert.js")
	serve("GET /herald.test.js", filepath.Join("..", "client", "js", "herald.test.js"))
	mux.HandleFunc("GET /herald.js", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/javascript; charset=utf-8")
		_, _ = w.Write([]byte(heraldjs.Source))
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)

	tab := b.tab("unit")
	do(t, tab, 10*time.Second, chromedp.Navigate(srv.URL+"/"))
	waitJS(t, tab, "the unit tests", `window.testResults && window.testResults.done`, 40*time.Second)
	var res struct {
		Passed []string
		Failed []struct{ Name, Error string }
	}
	if err := json.Unmarshal([]byte(eval[string](t, tab, `JSON.stringify(window.testResults)`)), &res); err != nil {
		t.Fatal(err)
	}
	for _, f := range res.Failed {
		t.Errorf("%s: %s", f.Name, f.Error)
	}
	if len(res.Passed) < 20 {
		t.Errorf("only %d unit tests passed: %v", len(res.Passed), res.Passed)
	}
	t.Logf("%d unit tests passed in Chromium", len(res.Passed))
}

// TestScreenshots writes docs/img/chat.png and docs/img/call.png with
// -update.
func TestScreenshots(t *testing.T) {
	if !*update {
		t.Skip("run with -update to write the screenshots")
	}
	c, b, alice, bob := twoChats(t, "lobby")
	shot := func(tab context.Context, name string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(tab, 20*time.Second)
		defer cancel()
		png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join("..", "docs", "img", name), png, 0o644); err != nil {
			t.Fatal(err)
		}
	}

	say(t, alice, "Hi Bob! Every message has one place in the room: its seq.")
	say(t, bob, "Hi Alice. Kill my node and I will reconnect and resume.")
	waitJS(t, alice, "bob's message", hasMessages("Hi Alice. Kill my node and I will reconnect and resume."), 10*time.Second)
	c.Crash(0)
	waitMoved(t, alice, "alice", "n1")
	say(t, alice, "Back, on another node, with nothing missed.")
	waitJS(t, bob, "alice's last message", hasMessages("Back, on another node, with nothing missed."), 10*time.Second)
	waitJS(t, alice, "the resume in the log", `document.querySelector('#connlog').innerText.includes('resumed')`, 10*time.Second)
	shot(alice, "chat.png")

	_, carol := call(t, c, b, "call",
		caller{name: "dave", node: 2, says: "Hello Carol, this goes peer to peer."},
		caller{name: "carol", node: 1, says: "Loud and clear, no server in between."})
	shot(carol, "call.png")
}
