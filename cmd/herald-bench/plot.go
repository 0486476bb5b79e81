package main

import (
	"bytes"
	"fmt"
	"html"
	"math"
)

// plotSVG draws a result's time series as an SVG: latency over time (log
// scale) above, throughput over time below, with the baselines' series
// dashed and the failover's kill marked.
func plotSVG(res *Result) []byte {
	type line struct {
		label  string
		color  string
		dashed bool
		pts    [][2]float64
	}
	var lat, thr []line
	add := func(r *Result, prefix string, dashed bool) {
		colors := map[string][3]string{
			"ack":      {"#1f77b4", "#6baed6", "#08306b"},
			"delivery": {"#2ca02c", "#74c476", "#00441b"},
		}
		if dashed {
			colors = map[string][3]string{
				"ack":      {"#ff7f0e", "#fdae6b", "#7f2704"},
				"delivery": {"#9467bd", "#bcbddc", "#3f007d"},
			}
		}
		for _, name := range []string{"ack", "delivery"} {
			s := r.Series[name]
			if len(s) == 0 {
				continue
			}
			c := colors[name]
			var p50, p99, mx, rate [][2]float64
			for _, pt := range s {
				rate = append(rate, [2]float64{pt.T, pt.Rate})
				if pt.Count > 0 {
					p50 = append(p50, [2]float64{pt.T, pt.P50})
					p99 = append(p99, [2]float64{pt.T, pt.P99})
					mx = append(mx, [2]float64{pt.T, pt.Max})
				}
			}
			lat = append(lat,
				line{prefix + name + " p50", c[1], dashed, p50},
				line{prefix + name + " p99", c[0], dashed, p99},
				line{prefix + name + " max", c[2], dashed, mx})
			thr = append(thr, line{prefix + map[string]string{"ack": "acks/s", "delivery": "deliveries/s"}[name], c[0], dashed, rate})
		}
	}
	add(res, "", false)
	for _, b := range res.Baselines {
		add(b, b.Target+" ", true)
	}

	const (
		width  = 980.0
		left   = 80.0
		right  = 230.0
		top    = 50.0
		panelH = 280.0
		gap    = 70.0
	)
	plotW := width - left - right
	height := top + 2*panelH + gap + 50
	var buf bytes.Buffer
	fmt.Fprintf(&buf, `<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" font-family="sans-serif" font-size="12">`+"\n", width, height)
	fmt.Fprintf(&buf, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	title := fmt.Sprintf("herald-bench %s on %s", res.Scenario, res.Target)
	if res.Mode != "" {
		title += " (" + res.Mode + ")"
	}
	fmt.Fprintf(&buf, `<text x="%.0f" y="24" font-size="15" font-weight="bold">%s</text>`+"\n", left, html.EscapeString(title))

	maxT := 0.0
	for _, ls := range [][]line{lat, thr} {
		for _, l := range ls {
			for _, p := range l.pts {
				maxT = max(maxT, p[0])
			}
		}
	}
	if maxT <= 0 {
		maxT = 1
	}
	xOf := func(t float64) float64 { return left + t/maxT*plotW }

	panel := func(y0 float64, name, unit string, ls []line, logScale bool) {
		lo, hi := math.Inf(1), 0.0
		for _, l := range ls {
			for _, p := range l.pts {
				if p[1] > 0 {
					lo = math.Min(lo, p[1])
				}
				hi = math.Max(hi, p[1])
			}
		}
		if hi <= 0 {
			hi, lo = 1, 0.1
		}
		var yOf func(v float64) float64
		var ticks []float64
		if logScale {
			lo = math.Pow(10, math.Floor(math.Log10(lo)))
			hi = math.Pow(10, math.Ceil(math.Log10(hi)))
			if hi <= lo {
				hi = lo * 10
			}
			yOf = func(v float64) float64 {
				v = math.Max(v, lo)
				return y0 + panelH - (math.Log10(v)-math.Log10(lo))/(math.Log10(hi)-math.Log10(lo))*panelH
			}
			for v := lo; v <= hi*1.001; v *= 10 {
				ticks = append(ticks, v)
			}
		} else {
			step := niceStep(hi / 5)
			hi = math.Ceil(hi*1.05/step) * step
			yOf = func(v float64) float64 { return y0 + panelH - v/hi*panelH }
			for v := 0.0; v <= hi*1.001; v += step {
				ticks = append(ticks, v)
			}
		}
		fmt.Fprintf(&buf, `<text x="%.0f" y="%.0f" font-weight="bold">%s</text>`+"\n", left, y0-8, html.EscapeString(name))
		fmt.Fprintf(&buf, `<rect x="%.0f" y="%.0f" width="%.0f" height="%.0f" fill="none" stroke="#999"/>`+"\n", left, y0, plotW, panelH)
		for _, v := range ticks {
			y := yOf(v)
			fmt.Fprintf(&buf, `<line x1="%.0f" y1="%.1f" x2="%.0f" y2="%.1f" stroke="#eee"/>`+"\n", left, y, left+plotW, y)
			fmt.Fprintf(&buf, `<text x="%.0f" y="%.1f" text-anchor="end">%s</text>`+"\n", left-6, y+4, tickLabel(v, unit))
		}
		tstep := niceStep(maxT / 10)
		for t := 0.0; t <= maxT*1.001; t += tstep {
			x := xOf(t)
			fmt.Fprintf(&buf, `<line x1="%.1f" y1="%.0f" x2="%.1f" y2="%.0f" stroke="#eee"/>`+"\n", x, y0, x, y0+panelH)
			fmt.Fprintf(&buf, `<text x="%.1f" y="%.0f" text-anchor="middle">%gs</text>`+"\n", x, y0+panelH+16, t)
		}
		if res.Failover != nil && res.Failover.Killed != "" {
			x := xOf(res.Failover.KillAt)
			fmt.Fprintf(&buf, `<line x1="%.1f" y1="%.0f" x2="%.1f" y2="%.0f" stroke="#d62728" stroke-width="1.5"/>`+"\n", x, y0, x, y0+panelH)
			fmt.Fprintf(&buf, `<text x="%.1f" y="%.0f" fill="#d62728">kill %s</text>`+"\n", x+4, y0+14, html.EscapeString(res.Failover.Killed))
		}
		ly := y0 + 10
		for _, l := range ls {
			if len(l.pts) == 0 {
				continue
			}
			dash := ""
			if l.dashed {
				dash = ` stroke-dasharray="6 4"`
			}
			fmt.Fprintf(&buf, `<polyline fill="none" stroke="%s" stroke-width="1.5"%s points="`, l.color, dash)
			for _, p := range l.pts {
				fmt.Fprintf(&buf, "%.1f,%.1f ", xOf(p[0]), yOf(p[1]))
			}
			buf.WriteString("\"/>\n")
			fmt.Fprintf(&buf, `<line x1="%.0f" y1="%.0f" x2="%.0f" y2="%.0f" stroke="%s" stroke-width="2"%s/>`+"\n",
				left+plotW+12, ly, left+plotW+36, ly, l.color, dash)
			fmt.Fprintf(&buf, `<text x="%.0f" y="%.0f">%s</text>`+"\n", left+plotW+42, ly+4, html.EscapeString(l.label))
			ly += 18
		}
	}
	panel(top, "latency over time (per interval)", "ms", lat, true)
	panel(top+panelH+gap, "throughput over time", "/s", thr, false)
	buf.WriteString("</svg>\n")
	return buf.Bytes()
}

// niceStep rounds a raw step up to 1, 2 or 5 times a power of ten.
func niceStep(raw float64) float64 {
	if raw <= 0 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(raw)))
	for _, m := range []float64{1, 2, 5, 10} {
		if raw <= m*p {
			return m * p
		}
	}
	return 10 * p
}

func tickLabel(v float64, unit string) string {
	switch {
	case unit == "ms" && v >= 1000:
		return fmt.Sprintf("%gs", v/1000)
	case unit == "ms":
		return fmt.Sprintf("%gms", v)
	case v >= 1e6:
		return fmt.Sprintf("%gM%s", v/1e6, unit)
	case v >= 1e3:
		return fmt.Sprintf("%gk%s", v/1e3, unit)
	}
	return fmt.Sprintf("%g%s", v, unit)
}
