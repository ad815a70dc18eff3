package main

import (
	"fmt"
	"html"
	"io"
	"math"
	"strconv"
	"strings"
)

// chartColors are the bar colours per client.
var chartColors = map[string]string{cPika: "#2b6cb0", cAMQP091: "#dd6b20"}

// chartPanel is one bar chart: a metric per workload per client.
type chartPanel struct {
	title     string
	workloads []string
	metric    func(*clientReport) float64
	format    func(float64) string
	ratio     string // key in workloadReport.Ratios shown under each group
}

// writeChart writes an SVG with grouped bars per workload: messages per
// second through the broker, messages per second to the sink (a scale of
// its own: it is an order of magnitude higher), and client CPU seconds per
// 100k messages.
func writeChart(out io.Writer, rep *report) error {
	var broker, sink, all []string
	for _, w := range rep.Config.Workloads {
		if rep.Workloads[w] == nil {
			continue
		}
		all = append(all, w)
		if needsBroker(w) {
			broker = append(broker, w)
		} else {
			sink = append(sink, w)
		}
	}
	rate := func(r *clientReport) float64 { return r.MsgsPerS }
	cpu := func(r *clientReport) float64 { return r.CPUSPer100k }
	var panels []chartPanel
	if len(broker) > 0 {
		panels = append(panels, chartPanel{"Messages/s through RabbitMQ (higher is better)", broker, rate, fmtRate, "msgs_per_s"})
	}
	if len(sink) > 0 {
		panels = append(panels, chartPanel{"Messages/s to the sink", sink, rate, fmtRate, "msgs_per_s"})
	}
	panels = append(panels, chartPanel{"Client CPU s per 100k messages (lower is better)", all, cpu, fmtSecs, "cpu_s_per_100k"})
	clients := rep.Config.Clients

	const (
		groupW  = 118
		plotTop = 110
		plotH   = 260
		marginL = 62
		marginR = 24
		height  = plotTop + plotH + 84
	)
	panelW := func(p chartPanel) int { return marginL + marginR + groupW*max(len(p.workloads), 2) }
	width := 0
	for _, p := range panels {
		width += panelW(p)
	}
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="Helvetica, Arial, sans-serif">`+"\n",
		width, height, width, height)
	fmt.Fprintf(&b, `<rect width="%d" height="%d" fill="#ffffff"/>`+"\n", width, height)
	c := rep.Config
	fmt.Fprintf(&b, `<text x="%d" y="24" font-size="16" font-weight="bold" text-anchor="middle">%s</text>`+"\n", width/2,
		esc(fmt.Sprintf("pika vs amqp091-go: %d messages of %d bytes, median of %d rounds", c.N, c.BodyBytes, c.Rounds)))
	mi := rep.Machine
	sub := fmt.Sprintf("%d CPUs, %s, %s, %s", mi.NumCPU, mi.CPUModel, mi.GoVersion, mi.OS)
	if mi.Broker != "" {
		sub += ", " + mi.Broker
	}
	fmt.Fprintf(&b, `<text x="%d" y="44" font-size="11" fill="#555" text-anchor="middle">%s</text>`+"\n", width/2, esc(sub))
	// Legend.
	lx := width/2 - 100*len(clients)/2
	for i, name := range clients {
		x := lx + i*100
		fmt.Fprintf(&b, `<rect x="%d" y="56" width="12" height="12" fill="%s"/>`, x, chartColors[name])
		fmt.Fprintf(&b, `<text x="%d" y="66" font-size="12">%s</text>`+"\n", x+16, esc(name))
	}
	fmt.Fprintf(&b, `<text x="%d" y="%d" font-size="10" fill="#555" text-anchor="middle">%s</text>`+"\n", width/2, height-10,
		esc("Under each group: pika's figure divided by amqp091-go's. CPU is the bench process's own (RUSAGE_SELF): the broker and the sink run in other processes."))

	px := 0
	for _, p := range panels {
		x0 := px + marginL
		plotW := panelW(p) - marginL - marginR
		px += panelW(p)
		maxV := 0.0
		for _, w := range p.workloads {
			for _, name := range clients {
				if r := rep.Workloads[w].Clients[name]; r != nil {
					maxV = math.Max(maxV, p.metric(r))
				}
			}
		}
		top := niceCeil(maxV)
		fmt.Fprintf(&b, `<text x="%d" y="%d" font-size="13" font-weight="bold" text-anchor="middle">%s</text>`+"\n",
			x0+plotW/2, plotTop-22, esc(p.title))
		// Axis and grid.
		for i := 0; i <= 4; i++ {
			v := top * float64(i) / 4
			y := float64(plotTop+plotH) - float64(plotH)*float64(i)/4
			stroke := "#e2e2e2"
			if i == 0 {
				stroke = "#333"
			}
			fmt.Fprintf(&b, `<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="%s"/>`, x0, y, x0+plotW, y, stroke)
			fmt.Fprintf(&b, `<text x="%d" y="%.1f" font-size="10" fill="#555" text-anchor="end">%s</text>`+"\n", x0-6, y+3, esc(p.format(v)))
		}
		gw := float64(plotW) / float64(len(p.workloads))
		barW := math.Min(40, gw*0.8/float64(max(1, len(clients))))
		for wi, w := range p.workloads {
			wr := rep.Workloads[w]
			gx := float64(x0) + gw*float64(wi)
			bx := gx + (gw-barW*float64(len(clients)))/2
			for ci, name := range clients {
				r := wr.Clients[name]
				if r == nil {
					continue
				}
				v := p.metric(r)
				h := 0.0
				if top > 0 {
					h = float64(plotH) * v / top
				}
				x := bx + barW*float64(ci)
				y := float64(plotTop+plotH) - h
				fmt.Fprintf(&b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"><title>%s %s: %s</title></rect>`,
					x, y, barW-2, h, chartColors[name], esc(w), esc(name), esc(p.format(v)))
				fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" font-size="9.5" text-anchor="middle">%s</text>`+"\n",
					x+(barW-2)/2, y-4, esc(p.format(v)))
			}
			fmt.Fprintf(&b, `<text x="%.1f" y="%d" font-size="11" text-anchor="middle">%s</text>`+"\n",
				gx+gw/2, plotTop+plotH+16, esc(w))
			if q, ok := wr.Ratios[p.ratio]; ok {
				fmt.Fprintf(&b, `<text x="%.1f" y="%d" font-size="11" font-weight="bold" fill="#333" text-anchor="middle">%.2fx</text>`+"\n",
					gx+gw/2, plotTop+plotH+32, q)
			}
		}
	}
	b.WriteString("</svg>\n")
	_, err := io.WriteString(out, b.String())
	return err
}

// niceCeil rounds v up to 1, 2, 2.5 or 5 times a power of ten.
func niceCeil(v float64) float64 {
	if v <= 0 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 2.5, 5, 10, 20} {
		if m*p >= v*1.08 {
			return m * p
		}
	}
	return 20 * p
}

func fmtRate(v float64) string {
	switch {
	case v >= 1e6:
		return strconv.FormatFloat(v/1e6, 'f', 2, 64) + "M"
	case v >= 1e3:
		return strconv.FormatFloat(v/1e3, 'f', 1, 64) + "k"
	default:
		return strconv.FormatFloat(v, 'f', 0, 64)
	}
}

func fmtSecs(v float64) string { return strconv.FormatFloat(v, 'f', 3, 64) + " s" }

func esc(s string) string { return html.EscapeString(s) }
