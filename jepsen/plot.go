package jepsen

import (
	"fmt"
	"html"
	"math"
	"strings"
)

// Plots are hand-written SVG: latency of every request and throughput per
// second over the run, with fault windows shaded.

const (
	plotW, plotH             = 1100, 420
	padL, padR, padT, padB   = 60, 20, 30, 40
	innerW, innerH           = plotW - padL - padR, plotH - padT - padB
	okColor, failColor, info = "#2b8a3e", "#c92a2a", "#e67700"
)

var faultColors = map[string]string{
	FaultPartition: "#f4cccc", FaultKill: "#fce5cd", FaultPause: "#fff2cc", FaultTransfer: "#d9ead3",
	FaultMove: "#d0e0e3", FaultMember: "#cfe2f3", FaultNetem: "#d9d2e9", FaultCrash: "#ea9999",
	FaultKillTerm: "#f9cb9c",
}

type svg struct {
	b    strings.Builder
	tMax float64
}

func newSVG(title string, tMax float64) *svg {
	s := &svg{tMax: math.Max(tMax, 1)}
	fmt.Fprintf(&s.b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="11">`+"\n", plotW, plotH)
	fmt.Fprintf(&s.b, `<rect width="100%%" height="100%%" fill="white"/><text x="%d" y="18" font-size="14">%s</text>`+"\n", padL, html.EscapeString(title))
	return s
}

func (s *svg) x(t float64) float64 { return padL + t/s.tMax*innerW }

// faults shades every fault window and marks the phases.
func (s *svg) faults(h History) {
	row := 0
	for i := range h {
		op := &h[i]
		if isWindow(op) {
			x0, x1 := s.x(secs(op.Start)), s.x(secs(op.End))
			c := faultColors[op.Fault]
			if c == "" {
				c = "#eeeeee"
			}
			fmt.Fprintf(&s.b, `<rect x="%.1f" y="%d" width="%.1f" height="%d" fill="%s" opacity="0.7"><title>%s</title></rect>`+"\n",
				x0, padT, math.Max(x1-x0, 1), innerH, c, html.EscapeString(op.Fault+": "+op.Value))
			fmt.Fprintf(&s.b, `<text x="%.1f" y="%d" fill="#555" font-size="9">%s</text>`+"\n", x0+2, padT+10+10*(row%3), html.EscapeString(op.Fault))
			row++
		}
		if op.F == FPhase && op.Value == PhaseFinalHeal {
			x := s.x(secs(op.Start))
			fmt.Fprintf(&s.b, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#1c7ed6" stroke-dasharray="4 3"/><text x="%.1f" y="%d" fill="#1c7ed6">final heal</text>`+"\n",
				x, padT, x, padT+innerH, x+3, padT+innerH-4)
		}
	}
}

func (s *svg) axes(yLabel string, ticks []float64, y func(float64) float64, label func(float64) string) {
	fmt.Fprintf(&s.b, `<rect x="%d" y="%d" width="%d" height="%d" fill="none" stroke="#888"/>`+"\n", padL, padT, innerW, innerH)
	for _, v := range ticks {
		yy := y(v)
		fmt.Fprintf(&s.b, `<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#ddd"/><text x="%d" y="%.1f" text-anchor="end">%s</text>`+"\n",
			padL, yy, padL+innerW, yy, padL-4, yy+4, label(v))
	}
	step := niceStep(s.tMax / 10)
	for t := 0.0; t <= s.tMax; t += step {
		fmt.Fprintf(&s.b, `<text x="%.1f" y="%d" text-anchor="middle">%gs</text>`+"\n", s.x(t), padT+innerH+15, t)
	}
	fmt.Fprintf(&s.b, `<text x="14" y="%d" transform="rotate(-90 14 %d)" text-anchor="middle">%s</text>`+"\n", padT+innerH/2, padT+innerH/2, yLabel)
}

func (s *svg) legend(items [][2]string) {
	x := padL + innerW - 80*len(items)
	for i, it := range items {
		fmt.Fprintf(&s.b, `<rect x="%d" y="8" width="10" height="10" fill="%s"/><text x="%d" y="17">%s</text>`+"\n", x+80*i, it[1], x+80*i+14, it[0])
	}
}

func (s *svg) bytes() []byte {
	s.b.WriteString("</svg>\n")
	return []byte(s.b.String())
}

// niceStep is the smallest of 1, 2 or 5 times a power of ten not below
// raw.
func niceStep(raw float64) float64 {
	if raw <= 1 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(raw)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*p >= raw {
			return m * p
		}
	}
	return 10 * p
}

func typeColor(t string) string {
	switch t {
	case TypeOK:
		return okColor
	case TypeFail:
		return failColor
	}
	return info
}

// latencyPlot draws every client request at its start time and latency.
func latencyPlot(h History) []byte {
	var tMax float64
	for i := range h {
		tMax = math.Max(tMax, secs(h[i].End))
	}
	s := newSVG("request latency (log scale) by outcome; faults shaded", tMax)
	s.faults(h)
	lo, hi := -3.0, 1.5 // log10 of seconds: 1 ms .. 30 s
	y := func(v float64) float64 {
		l := math.Log10(math.Max(v, 1e-3))
		return padT + innerH - (l-lo)/(hi-lo)*innerH
	}
	s.axes("latency", []float64{0.001, 0.01, 0.1, 1, 10}, y, func(v float64) string {
		if v < 1 {
			return fmt.Sprintf("%gms", v*1000)
		}
		return fmt.Sprintf("%gs", v)
	})
	n := 0
	for i := range h {
		if clientOp(&h[i]) {
			n++
		}
	}
	every := max(n/40000, 1)
	k := 0
	for i := range h {
		op := &h[i]
		if !clientOp(op) {
			continue
		}
		k++
		if k%every != 0 {
			continue
		}
		fmt.Fprintf(&s.b, `<circle cx="%.1f" cy="%.1f" r="1.4" fill="%s" opacity="0.6"/>`+"\n",
			s.x(secs(op.Start)), y(secs(op.End-op.Start)), typeColor(op.Type))
	}
	s.legend([][2]string{{"ok", okColor}, {"fail", failColor}, {"info", info}})
	return s.bytes()
}

// throughputPlot draws requests completed per second by outcome.
func throughputPlot(h History) []byte {
	var tMax float64
	for i := range h {
		tMax = math.Max(tMax, secs(h[i].End))
	}
	buckets := int(tMax) + 1
	counts := map[string][]int{TypeOK: make([]int, buckets), TypeFail: make([]int, buckets), TypeInfo: make([]int, buckets)}
	peak := 1
	for i := range h {
		op := &h[i]
		if !clientOp(op) {
			continue
		}
		b := int(secs(op.End))
		if c := counts[op.Type]; c != nil && b < buckets {
			c[b]++
			peak = max(peak, c[b])
		}
	}
	s := newSVG("requests completed per second by outcome; faults shaded", tMax)
	s.faults(h)
	top := float64(peak) * 1.1
	y := func(v float64) float64 { return padT + innerH - v/top*innerH }
	var ticks []float64
	step := niceStep(top / 6)
	for v := 0.0; v <= top; v += step {
		ticks = append(ticks, v)
	}
	s.axes("requests/s", ticks, y, func(v float64) string { return fmt.Sprintf("%g", v) })
	for _, t := range []string{TypeOK, TypeFail, TypeInfo} {
		var pts []string
		for b, c := range counts[t] {
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", s.x(float64(b)+0.5), y(float64(c))))
		}
		fmt.Fprintf(&s.b, `<polyline fill="none" stroke="%s" stroke-width="1.5" points="%s"/>`+"\n", typeColor(t), strings.Join(pts, " "))
	}
	s.legend([][2]string{{"ok", okColor}, {"fail", failColor}, {"info", info}})
	return s.bytes()
}
