package web_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/heraldhq/herald/internal/testcluster"
	"github.com/heraldhq/herald/wsfront"
)

// The JS client in Chromium against a real node: a publish over the
// node's max_frame rejects with too_large at once, whether the node would
// have answered it (up to 4 × max_frame) or closed the socket for it
// (beyond), and the client keeps its socket. A socket without the
// client's check (an older client) gets too_large with its own id, even
// when the id comes after the data.
func TestClientOversizedPublishInBrowser(t *testing.T) {
	findChromium(t)
	c := testcluster.Start(t, testcluster.Options{Nodes: 1})
	servePages(t, c)
	b := newBrowser(t)
	tab := b.tab("oversize")
	do(t, tab, 10*time.Second, chromedp.Navigate(c.HTTP(0)+"/nodes.json"))

	maxFrame := wsfront.DefaultLimits().MaxFrame
	script := fmt.Sprintf(`(async () => {
  const url = %q, maxFrame = %d;
  const { Herald } = await import('/herald.js');
  // settle never waits more than 10 s: a hang is a result, not a stuck test.
  const settle = (p) => Promise.race([
    p.then((r) => ({ ok: true, seq: r.seq }), (e) => ({ code: e.code, retryable: e.retryable, message: String(e.message) })),
    new Promise((resolve) => setTimeout(() => resolve({ pending: true }), 10000)),
  ]);
  const client = await Herald.connect({ urls: [url], user: 'alice' });
  const states = [];
  client.on('state', (s) => states.push(s.state + (s.closeCode ? ' ' + s.closeCode : '')));
  const out = {};
  out.over = await settle(client.publish('r', 'x'.repeat(maxFrame + 100)));
  out.huge = await settle(client.publish('r', 'x'.repeat(5 * maxFrame)));
  out.small = await settle(client.publish('r', 'small'));
  out.states = [...states];
  client.close();

  const ws = new WebSocket(url, 'herald.v1');
  const frames = [];
  const next = () => new Promise((resolve) => {
    const t = setTimeout(() => resolve({ pending: true }), 10000);
    const take = () => { if (frames.length) { clearTimeout(t); resolve(frames.shift()); } else setTimeout(take, 5); };
    take();
  });
  ws.onmessage = (e) => frames.push(JSON.parse(e.data));
  await new Promise((resolve, reject) => { ws.onopen = resolve; ws.onerror = reject; });
  ws.send(JSON.stringify({ id: 1, op: 'auth', user: 'bob' }));
  out.rawAuth = await next();
  ws.send('{"op":"publish","room":"r","data":{"text":"' + 'y'.repeat(2 * maxFrame) + '","id":9},"id":"late"}');
  out.raw = await next();
  ws.close();
  return JSON.stringify(out);
})()`, c.URL(0), maxFrame)
	ctx, cancel := context.WithTimeout(tab, 60*time.Second)
	defer cancel()
	got, err := chromedp.Run(ctx, chromedp.Evaluate[string](script, chromedp.EvalAwaitPromise))
	if err != nil {
		t.Fatalf("browser: %v", err)
	}
	t.Logf("results: %s", got)
	type result struct {
		OK        bool   `json:"ok"`
		Pending   bool   `json:"pending"`
		Code      string `json:"code"`
		Retryable bool   `json:"retryable"`
		Message   string `json:"message"`
		Seq       int    `json:"seq"`
	}
	var res struct {
		Over, Huge, Small result
		States            []string
		RawAuth           map[string]any
		Raw               map[string]any
	}
	if err := json.Unmarshal([]byte(got), &res); err != nil {
		t.Fatalf("%v: %s", err, got)
	}
	for name, r := range map[string]result{"publish just over max_frame": res.Over, "publish of 5 × max_frame": res.Huge} {
		if r.Pending || r.Code != "too_large" || r.Retryable {
			t.Errorf("%s: %+v, want too_large at once", name, r)
		}
	}
	if !res.Small.OK || res.Small.Seq != 1 {
		t.Errorf("publish after the refusals: %+v", res.Small)
	}
	if len(res.States) != 0 {
		t.Errorf("the client's connection changed: %v", res.States)
	}
	limits, _ := res.RawAuth["limits"].(map[string]any)
	if limits["max_frame"] != float64(maxFrame) {
		t.Errorf("auth reply without limits: %v", res.RawAuth)
	}
	e, _ := res.Raw["error"].(map[string]any)
	if res.Raw["id"] != "late" || e["code"] != "too_large" {
		t.Errorf("oversized frame from a socket without the check: %v, want too_large with id \"late\"", res.Raw)
	}
}
