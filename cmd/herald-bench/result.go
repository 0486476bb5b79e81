package main

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// dur is a duration that reads and writes as text ("10s") in JSON.
type dur time.Duration

func (d dur) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

func (d *dur) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	v, err := time.ParseDuration(s)
	*d = dur(v)
	return err
}

// Params are a scenario's parameters, as given.
type Params struct {
	Scenario    string  `json:"scenario"`
	Nodes       int     `json:"nodes,omitempty"`
	Groups      int     `json:"groups,omitempty"`
	Rooms       int     `json:"rooms,omitempty"`
	Conns       int     `json:"conns,omitempty"`
	Subscribers int     `json:"subscribers_per_room,omitempty"`
	Publishers  int     `json:"publishers,omitempty"`
	Inflight    int     `json:"inflight,omitempty"`
	Payload     int     `json:"payload_bytes,omitempty"`
	Rate        float64 `json:"rate,omitempty"`
	Duration    dur     `json:"duration"`
	Warmup      dur     `json:"warmup"`
	Interval    dur     `json:"interval"`
	Dialers     int     `json:"dialers,omitempty"`
	KillAfter   dur     `json:"kill_after,omitempty"`
	KillNode    string  `json:"kill_node,omitempty"`
	KillSignal  string  `json:"kill_signal,omitempty"`
}

func (p Params) mode() string {
	switch p.Scenario {
	case "conns":
		return ""
	case "publish", "fanout":
		if p.Rate == 0 {
			return fmt.Sprintf("closed loop, %d in flight per publisher", max(p.Inflight, 1))
		}
	}
	return fmt.Sprintf("open loop, %g/s", p.Rate)
}

// Result is one scenario's outcome against one target.
type Result struct {
	Scenario string `json:"scenario"`
	Target   string `json:"target"` // herald, raw-gws, raw-commit, jetstream-always, jetstream-default or external
	// ServerVersion names the servers of a baseline that is not Herald.
	ServerVersion string    `json:"server_version,omitempty"`
	Mode          string    `json:"mode,omitempty"`
	Params        Params    `json:"params"`
	Started       time.Time `json:"started"`
	Window        float64   `json:"window_s"` // the measured time

	// Publishes acknowledged ok that started in the window, and their
	// latency from the (scheduled) send to the reply.
	Ops        int64    `json:"ops,omitempty"`
	Throughput float64  `json:"ops_per_s,omitempty"`
	Ack        *Latency `json:"ack,omitempty"`
	// SendLag (open loop) is how late the generator sent against its
	// schedule: if it grows, the generator, not the server, is behind.
	SendLag *Latency `json:"send_lag,omitempty"`

	// Events received whose publish started in the window; expected is
	// acked publishes times the subscribers of their room.
	Deliveries         int64    `json:"deliveries,omitempty"`
	ExpectedDeliveries int64    `json:"expected_deliveries,omitempty"`
	DeliveryRate       float64  `json:"deliveries_per_s,omitempty"`
	Delivery           *Latency `json:"delivery,omitempty"`

	// Errors by code: the protocol's codes, the generator's own outcomes
	// (disconnected, timeout, send_failed) and sockets closed under load
	// (socket_closed_<close code>).
	Errors     map[string]int64 `json:"errors,omitempty"`
	Reconnects int64            `json:"reconnects,omitempty"`

	// Sockets opened (conns, rooms, fanout setup): dial, upgrade, auth and
	// every subscribe.
	Sockets       int      `json:"sockets,omitempty"`
	ConnectRate   float64  `json:"connects_per_s,omitempty"`
	Connect       *Latency `json:"connect,omitempty"`
	SubscribeRate float64  `json:"subscribes_per_s,omitempty"`
	Subscribe     *Latency `json:"subscribe,omitempty"`

	// Server memory, summed over the server processes, after a GC.
	ServerRSSBefore int64   `json:"server_rss_before,omitempty"`
	ServerRSSAfter  int64   `json:"server_rss_after,omitempty"`
	RSSPerSocket    float64 `json:"rss_per_socket,omitempty"`
	RSSPerRoom      float64 `json:"rss_per_room,omitempty"`
	// The Go runtime's live heap and stacks (from /metrics, after the same
	// GC), which unlike RSS leaves out the garbage and freed pages the
	// runtime keeps up to its next GC goal.
	ServerLiveBefore    int64   `json:"server_go_live_before,omitempty"`
	ServerLiveAfter     int64   `json:"server_go_live_after,omitempty"`
	LivePerSocket       float64 `json:"go_live_per_socket,omitempty"`
	LivePerRoom         float64 `json:"go_live_per_room,omitempty"`
	GoroutinesPerSocket float64 `json:"goroutines_per_socket,omitempty"`

	// CPU in cores (CPU seconds per second of the window): the load
	// generator's own (getrusage) and the server processes' (/proc).
	GeneratorCPU float64 `json:"generator_cpu_cores"`
	ServerCPU    float64 `json:"server_cpu_cores,omitempty"`
	// OtherCPU is what the rest of the machine used meanwhile (from
	// /proc/stat): on a shared machine, the noise in the numbers.
	OtherCPU float64 `json:"other_cpu_cores"`

	Failover *Failover          `json:"failover,omitempty"`
	Series   map[string][]Point `json:"series,omitempty"`

	Baselines []*Result `json:"baselines,omitempty"`
	Ratios    []Ratio   `json:"ratios,omitempty"`
	Notes     []string  `json:"notes,omitempty"`
}

// Failover is what the failover scenario measures around the kill.
type Failover struct {
	Killed       string  `json:"killed"`
	Signal       string  `json:"signal"`
	Group        uint64  `json:"group"`
	KillAt       float64 `json:"kill_at_s"`
	NewLeader    string  `json:"new_leader,omitempty"`
	LeaderAfter  float64 `json:"leader_after_s,omitempty"` // kill to a new leader seen by the admin API
	BeforeRate   float64 `json:"before_per_s"`
	BeforeP99    float64 `json:"before_p99_ms"`
	MinRate      float64 `json:"min_per_s"`      // lowest 1 s throughput after the kill
	SpikeMax     float64 `json:"spike_max_ms"`   // highest latency of a publish after the kill
	RecoveredAt  float64 `json:"recovered_s"`    // kill to throughput back at 90% after its dip; -1: never
	LatencyAfter float64 `json:"latency_back_s"` // kill to the end of the latency spike; -1: never
}

// Ratio is Herald measured against a baseline, with its goal.
type Ratio struct {
	Name  string  `json:"name"`
	Value float64 `json:"value"`
	Goal  string  `json:"goal"`
	Met   bool    `json:"met"`
	// Reference ratios have no goal; they put another number in context.
	Reference bool `json:"reference,omitempty"`
}

func (x Ratio) verdict() string {
	switch {
	case x.Reference:
		return "reference"
	case x.Met:
		return "met"
	}
	return "not met"
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func ms(v float64) string {
	switch {
	case v >= 1000:
		return fmt.Sprintf("%.2fs", v/1000)
	case v >= 10:
		return fmt.Sprintf("%.1fms", v)
	default:
		return fmt.Sprintf("%.2fms", v)
	}
}

func bytesHuman(v float64) string {
	switch {
	case v >= 1<<30:
		return fmt.Sprintf("%.2f GiB", v/(1<<30))
	case v >= 1<<20:
		return fmt.Sprintf("%.1f MiB", v/(1<<20))
	case v >= 10<<10:
		return fmt.Sprintf("%.1f KiB", v/(1<<10))
	default:
		return fmt.Sprintf("%.0f B", v)
	}
}

// thousands formats n with thousands separators.
func thousands(v float64) string {
	n := int64(v + 0.5)
	s := fmt.Sprint(n)
	if n < 0 {
		return s
	}
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}

func latencyRow(l *Latency) string {
	if l == nil || l.Count == 0 {
		return "-"
	}
	return fmt.Sprintf("p50 %s  p90 %s  p99 %s  p99.9 %s  max %s  (n=%s)",
		ms(l.P50), ms(l.P90), ms(l.P99), ms(l.P999), ms(l.Max), thousands(float64(l.Count)))
}

func errorsText(m map[string]int64) string {
	if len(m) == 0 {
		return "none"
	}
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, fmt.Sprintf("%s %d", k, m[k]))
	}
	return strings.Join(parts, ", ")
}

// printHuman writes a result (and its baselines) as a table.
func printHuman(w io.Writer, r *Result) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	row := func(k, v string) { fmt.Fprintf(tw, "  %s\t%s\n", k, v) }
	fmt.Fprintf(tw, "%s on %s", r.Scenario, r.Target)
	if r.Mode != "" {
		fmt.Fprintf(tw, " (%s)", r.Mode)
	}
	fmt.Fprintf(tw, ", %.1fs measured\n", r.Window)
	if r.Sockets > 0 {
		row("sockets", fmt.Sprintf("%s at %s/s (dial, auth, subscribe)", thousands(float64(r.Sockets)), thousands(r.ConnectRate)))
		row("connect latency", latencyRow(r.Connect))
	}
	if r.SubscribeRate > 0 {
		row("subscribes", fmt.Sprintf("%s/s", thousands(r.SubscribeRate)))
	}
	if r.Ops > 0 || r.Ack != nil {
		row("publishes acked", fmt.Sprintf("%s (%s/s)", thousands(float64(r.Ops)), thousands(r.Throughput)))
		row("ack latency", latencyRow(r.Ack))
	}
	if r.SendLag != nil && r.SendLag.Count > 0 {
		row("generator send lag", latencyRow(r.SendLag))
	}
	if r.Delivery != nil {
		row("deliveries", fmt.Sprintf("%s of %s expected (%s/s)", thousands(float64(r.Deliveries)),
			thousands(float64(r.ExpectedDeliveries)), thousands(r.DeliveryRate)))
		row("delivery latency", latencyRow(r.Delivery))
	}
	if r.ServerRSSAfter > 0 {
		row("server RSS", fmt.Sprintf("%s -> %s", bytesHuman(float64(r.ServerRSSBefore)), bytesHuman(float64(r.ServerRSSAfter))))
	}
	if r.RSSPerSocket != 0 {
		row("server RSS per socket", bytesHuman(r.RSSPerSocket))
	}
	if r.RSSPerRoom != 0 {
		row("server RSS per room", bytesHuman(r.RSSPerRoom))
	}
	if r.ServerLiveAfter > 0 {
		row("server Go live heap+stacks", fmt.Sprintf("%s -> %s", bytesHuman(float64(r.ServerLiveBefore)), bytesHuman(float64(r.ServerLiveAfter))))
	}
	if r.LivePerSocket != 0 {
		row("server live heap+stacks per socket", fmt.Sprintf("%s, %.2f goroutines per socket", bytesHuman(r.LivePerSocket), r.GoroutinesPerSocket))
	}
	if r.LivePerRoom != 0 {
		row("server live heap+stacks per room", bytesHuman(r.LivePerRoom))
	}
	if f := r.Failover; f != nil {
		row("killed", fmt.Sprintf("%s (SIG%s) at %.1fs, leader of group %d", f.Killed, strings.ToUpper(f.Signal), f.KillAt, f.Group))
		if f.NewLeader != "" {
			row("new leader", fmt.Sprintf("%s after %.2fs", f.NewLeader, f.LeaderAfter))
		}
		row("before the kill", fmt.Sprintf("%s/s, p99 %s", thousands(f.BeforeRate), ms(f.BeforeP99)))
		row("after the kill", fmt.Sprintf("lowest %s/s over 1 s, worst latency %s", thousands(f.MinRate), ms(f.SpikeMax)))
		row("recovered", fmt.Sprintf("throughput after %s, latency spike over after %s", secs(f.RecoveredAt), secs(f.LatencyAfter)))
	}
	row("errors", errorsText(r.Errors))
	if r.Reconnects > 0 {
		row("reconnects", fmt.Sprint(r.Reconnects))
	}
	cpu := fmt.Sprintf("generator %.2f cores", r.GeneratorCPU)
	if r.ServerCPU > 0 {
		cpu += fmt.Sprintf(", servers %.2f cores", r.ServerCPU)
	}
	cpu += fmt.Sprintf(", other processes %.2f cores", r.OtherCPU)
	row("CPU", cpu)
	if c := cpuPerAck(r); c > 0 {
		row("server CPU per ack", fmt.Sprintf("%.0f µs", c*1e6))
	}
	if r.ServerVersion != "" {
		row("servers", r.ServerVersion)
	}
	for _, n := range r.Notes {
		row("note", n)
	}
	_ = tw.Flush()
	for _, b := range r.Baselines {
		fmt.Fprintln(w)
		printHuman(w, b)
	}
	if len(r.Ratios) > 0 {
		fmt.Fprintln(w)
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ratio\tvalue\tgoal\t")
		for _, x := range r.Ratios {
			fmt.Fprintf(tw, "%s\t%.2f\t%s\t%s\n", x.Name, x.Value, x.Goal, x.verdict())
		}
		_ = tw.Flush()
	}
}

func secs(s float64) string {
	if s < 0 {
		return "never (within the run)"
	}
	return fmt.Sprintf("%.1fs", s)
}
