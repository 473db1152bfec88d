// This file holds the markdown report the benchmarks print: latency rows,
// figures and the targets, each met or not.

package benchstat

import (
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Ms renders d in milliseconds: two decimals below 10 ms, one above.
func Ms(d time.Duration) string {
	ms := float64(d) / float64(time.Millisecond)
	if ms < 10 {
		return fmt.Sprintf("%.2f", ms)
	}
	return fmt.Sprintf("%.1f", ms)
}

// MsN renders d in milliseconds with decimals decimals.
func MsN(d time.Duration, decimals int) string {
	return fmt.Sprintf("%.*f", decimals, float64(d)/float64(time.Millisecond))
}

// MachineNote describes the machine and its load at when, with the
// runtime daemon the benchmark drives (its name and version).
func MachineNote(when, daemon string) string {
	kernel, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	return fmt.Sprintf("%s: %d CPUs, load average %s (1, 5, 15 min), kernel %s, %s, %s",
		when, runtime.NumCPU(), LoadAverage(), strings.TrimSpace(string(kernel)), daemon, runtime.Version())
}

// LoadAverage is the machine's 1, 5 and 15 minute load averages as
// /proc/loadavg gives them ("0.52 0.31 0.20"), or "unknown".
func LoadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	if err != nil || len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

// Dir returns a directory for a benchmark's stores, removed at the end: a
// test temporary directory, or one named pattern* under ESB_BENCH_DIR,
// which puts the stores on another file system (e.g. a tmpfs such as
// /dev/shm, like /run/esb on a production host).
func Dir(b *testing.B, pattern string) string {
	b.Helper()
	base := os.Getenv("ESB_BENCH_DIR")
	if base == "" {
		return b.TempDir()
	}
	root, err := os.MkdirTemp(base, pattern)
	if err != nil {
		b.Fatalf("create bench dir: %v", err)
	}
	b.Cleanup(func() {
		if err := os.RemoveAll(root); err != nil {
			b.Errorf("remove bench dir: %v", err)
		}
	})
	return root
}

// FSType names the file system holding dir.
func FSType(dir string) string {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return "unknown fs"
	}
	switch st.Type {
	case unix.TMPFS_MAGIC:
		return "tmpfs"
	case unix.EXT4_SUPER_MAGIC:
		return "ext4"
	case unix.XFS_SUPER_MAGIC:
		return "xfs"
	case unix.BTRFS_SUPER_MAGIC:
		return "btrfs"
	case unix.OVERLAYFS_SUPER_MAGIC:
		return "overlayfs"
	default:
		return fmt.Sprintf("fs type %#x", st.Type)
	}
}

// Row is one line of a latency table.
type Row struct {
	Name    string
	Samples Samples
	Note    string
}

// Figure is one measured value that is not a latency distribution.
type Figure struct {
	Name  string
	Value string
	Note  string
}

// Target is one of the acceptance checks.
type Target struct {
	Name     string
	Measured float64 // in Unit
	Limit    float64 // in Unit
	Unit     string  // "×", "ms", "MiB", "s"
	// Strict makes the check Measured < Limit ("under"); otherwise
	// Measured ≤ Limit ("at most"). AtLeast turns it round: Measured ≥
	// Limit.
	Strict  bool
	AtLeast bool
	// Known is false when the figure could not be measured.
	Known  bool
	Detail string
}

// Met reports whether the target was measured and is within its limit.
func (t Target) Met() bool {
	if !t.Known {
		return false
	}
	switch {
	case t.AtLeast:
		return t.Measured >= t.Limit
	case t.Strict:
		return t.Measured < t.Limit
	}
	return t.Measured <= t.Limit
}

// Result renders the outcome: met, NOT MET or not measured.
func (t Target) Result() string { return Outcome(t.Known, t.Met()) }

// Outcome is the result column of every benchmark's targets: met, NOT
// MET, or not measured when known is false.
func Outcome(known, met bool) string {
	switch {
	case !known:
		return "not measured"
	case met:
		return "met"
	default:
		return "NOT MET"
	}
}

// Ratio is num/den, and whether both were measured (above zero).
func Ratio(num, den time.Duration) (float64, bool) {
	if num <= 0 || den <= 0 {
		return 0, false
	}
	return float64(num) / float64(den), true
}

// RatioTarget is a target on num/den; it is unknown when either is zero.
func RatioTarget(name string, num, den time.Duration, limit float64, detail string) Target {
	t := Target{Name: name, Limit: limit, Unit: "×", Detail: detail}
	t.Measured, t.Known = Ratio(num, den)
	return t
}

// Table is a table of any shape: a header and rows of cells.
type Table struct {
	Head []string
	Rows [][]string
}

// Summary is what the benchmark prints.
type Summary struct {
	Title   string
	Notes   []string
	Tables  []Table // before the latency rows
	Latency []Row   // end-to-end latencies
	Phases  []Row   // one acquire and release taken apart
	Figures []Figure
	Targets []Target
}

func writeRows(b *strings.Builder, head string, rows []Row) {
	fmt.Fprintf(b, "| %s | samples | p50 ms | p95 ms | mean ms | max ms | note |\n", head)
	b.WriteString("| --- | ---: | ---: | ---: | ---: | ---: | --- |\n")
	for _, r := range rows {
		s := r.Samples
		fmt.Fprintf(b, "| %s | %d | %s | %s | %s | %s | %s |\n", r.Name, len(s),
			Ms(s.P50()), Ms(s.P95()), Ms(s.Mean()), Ms(s.Max()), r.Note)
	}
}

func num(v float64) string {
	switch {
	case v >= 100:
		return fmt.Sprintf("%.0f", v)
	case v >= 10:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.2f", v)
	}
}

// WriteHead starts a benchmark's markdown report: the title as a heading,
// then the notes as a list.
func WriteHead(b *strings.Builder, title string, notes []string) {
	fmt.Fprintf(b, "\n## %s\n\n", title)
	for _, n := range notes {
		fmt.Fprintf(b, "- %s\n", n)
	}
}

// WriteReport writes a benchmark's markdown report to w: the title and
// the notes (WriteHead), what body writes, then a blank line.
func WriteReport(w io.Writer, title string, notes []string, body func(b *strings.Builder)) error {
	var b strings.Builder
	WriteHead(&b, title, notes)
	body(&b)
	b.WriteString("\n")
	_, err := io.WriteString(w, b.String())
	return err
}

// WriteTargets writes targets as a markdown table: each one's measure,
// limit, result and detail.
func WriteTargets(b *strings.Builder, targets []Target) {
	b.WriteString("\n| target | measured | limit | result | detail |\n| --- | ---: | ---: | --- | --- |\n")
	for _, t := range targets {
		measured := "n/a"
		if t.Known {
			measured = num(t.Measured) + " " + t.Unit
		}
		op := "≤"
		if t.Strict {
			op = "<"
		}
		if t.AtLeast {
			op = "≥"
		}
		fmt.Fprintf(b, "| %s | %s | %s %s %s | %s | %s |\n", t.Name, measured, op, num(t.Limit), t.Unit, t.Result(), t.Detail)
	}
}

// Print writes the summary as markdown: the tables, the latency rows, the
// phases of one acquire, the other figures, then the targets.
func (s *Summary) Print(w io.Writer) error {
	return WriteReport(w, s.Title, s.Notes, func(b *strings.Builder) {
		for _, t := range s.Tables {
			b.WriteString("\n| " + strings.Join(t.Head, " | ") + " |\n|")
			for range t.Head {
				b.WriteString(" ---: |")
			}
			b.WriteString("\n")
			for _, r := range t.Rows {
				b.WriteString("| " + strings.Join(r, " | ") + " |\n")
			}
		}
		if len(s.Latency) > 0 {
			b.WriteString("\n")
			writeRows(b, "operation", s.Latency)
		}
		if len(s.Phases) > 0 {
			b.WriteString("\n")
			writeRows(b, "phase (in-process agent, same code)", s.Phases)
		}
		if len(s.Figures) > 0 {
			b.WriteString("\n| figure | value | note |\n| --- | ---: | --- |\n")
			for _, f := range s.Figures {
				fmt.Fprintf(b, "| %s | %s | %s |\n", f.Name, f.Value, f.Note)
			}
		}
		if len(s.Targets) > 0 {
			WriteTargets(b, s.Targets)
		}
	})
}
