package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
	"text/tabwriter"
)

// machineInfo describes where the bench ran.
type machineInfo struct {
	NumCPU    int    `json:"nproc"`
	CPUModel  string `json:"cpu_model"`
	GoVersion string `json:"go_version"`
	OS        string `json:"os"`
	Kernel    string `json:"kernel"`
	Broker    string `json:"broker,omitempty"`
}

func collectMachineInfo() machineInfo {
	mi := machineInfo{
		NumCPU:    runtime.NumCPU(),
		GoVersion: runtime.Version(),
		OS:        runtime.GOOS + "/" + runtime.GOARCH,
	}
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
				mi.CPUModel = strings.TrimSpace(v)
				break
			}
		}
		f.Close()
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		mi.Kernel = strings.TrimSpace(string(b))
	}
	return mi
}

// targetResult is one of the project's performance targets, checked.
type targetResult struct {
	Target   string  `json:"target"`
	Workload string  `json:"workload"`
	Pika     float64 `json:"pika"`
	Limit    float64 `json:"limit"` // the bound pika's figure must meet
	Met      bool    `json:"met"`
}

// evaluateTargets checks the project's targets against the medians.
func evaluateTargets(rep *report) []targetResult {
	var ts []targetResult
	get := func(w string) (p, a *clientReport) {
		wr := rep.Workloads[w]
		if wr == nil {
			return nil, nil
		}
		return wr.Clients[cPika], wr.Clients[cAMQP091]
	}
	for _, w := range []string{wPublish, wPublishConfirm, wConsume} {
		if p, a := get(w); p != nil && a != nil {
			lim := a.CPUSPer100k / 3
			ts = append(ts, targetResult{"client CPU per 100k msgs <= 1/3 of amqp091-go's", w, p.CPUSPer100k, lim, p.CPUSPer100k <= lim})
		}
	}
	for _, w := range []string{wPublish, wPublishConfirm, wPublishSink} {
		if p, _ := get(w); p != nil {
			ts = append(ts, targetResult{"<= 1 allocation per published message", w, p.AllocsPerMsg, 1, p.AllocsPerMsg <= 1})
		}
	}
	if p, _ := get(wConsume); p != nil {
		ts = append(ts, targetResult{"<= 2 allocations per consumed message", wConsume, p.AllocsPerMsg, 2, p.AllocsPerMsg <= 2})
	}
	for _, w := range allWorkloads {
		if p, a := get(w); p != nil && a != nil {
			ts = append(ts, targetResult{"msgs/s >= amqp091-go's", w, p.MsgsPerS, a.MsgsPerS, p.MsgsPerS >= a.MsgsPerS})
		}
	}
	if p, a := get(wPublishSink); p != nil && a != nil {
		lim := 3 * a.MsgsPerS
		ts = append(ts, targetResult{"msgs/s vs the sink >= 3x amqp091-go's", wPublishSink, p.MsgsPerS, lim, p.MsgsPerS >= lim})
	}
	for _, w := range []string{wPublish, wPublishSink} {
		if p, _ := get(w); p != nil {
			ts = append(ts, targetResult{"<= 0.1 write calls per published message at full speed", w, p.WritesPerMsg, 0.1, p.WritesPerMsg <= 0.1})
		}
	}
	return ts
}

// printTable writes the report as readable tables.
func printTable(out io.Writer, rep *report) {
	mi := rep.Machine
	fmt.Fprintf(out, "%d CPUs (%s), %s, %s, kernel %s", mi.NumCPU, mi.CPUModel, mi.GoVersion, mi.OS, mi.Kernel)
	if mi.Broker != "" {
		fmt.Fprintf(out, ", %s", mi.Broker)
	}
	c := rep.Config
	fmt.Fprintf(out, "\nN=%d, %d-byte bodies, %d round(s), %s; confirm window %d, prefetch %d, ack every %d\n\n",
		c.N, c.BodyBytes, c.Rounds, c.Stat, c.ConfirmWindow, c.Prefetch, c.AckEvery)
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "workload\tclient\tmsgs/s\tCPU s/100k\tallocs/msg\tbytes/msg\twrites/msg\treads/msg\t")
	for _, w := range c.Workloads {
		wr := rep.Workloads[w]
		if wr == nil {
			continue
		}
		for _, name := range c.Clients {
			r := wr.Clients[name]
			if r == nil {
				continue
			}
			fmt.Fprintf(tw, "%s\t%s\t%.0f\t%.3f\t%.2f\t%.1f\t%.4f\t%.4f\t\n", w, name,
				r.MsgsPerS, r.CPUSPer100k, r.AllocsPerMsg, r.BytesPerMsg, r.WritesPerMsg, r.ReadsPerMsg)
		}
		if q := wr.Ratios; q != nil {
			fmt.Fprintf(tw, "%s\tpika/amqp091\t", w)
			for _, k := range []string{"msgs_per_s", "cpu_s_per_100k", "allocs_per_msg", "bytes_per_msg", "writes_per_msg", "reads_per_msg"} {
				if v, ok := q[k]; ok {
					fmt.Fprintf(tw, "%.3fx\t", v)
				} else {
					fmt.Fprint(tw, "-\t")
				}
			}
			fmt.Fprintln(tw)
		}
	}
	tw.Flush()
	if len(rep.Targets) > 0 {
		fmt.Fprintln(out, "\ntargets (pika's median against the bound):")
		tw = tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
		for _, t := range rep.Targets {
			verdict := "MISSED"
			if t.Met {
				verdict = "met"
			}
			fmt.Fprintf(tw, "  %s\t%s\tpika %.6g\tbound %.6g\t%s\n", t.Target, t.Workload, t.Pika, t.Limit, verdict)
		}
		tw.Flush()
	}
}
