// Package esbnet_test checks the repository's top-level documents. It sits at
// the root beside README.md and README.ja.md so that it runs with the unit
// tests (`make test-unit`, any user, no daemons) rather than in tests/, whose
// suites need root, and past the namespace tier the stack.
package esbnet_test

import (
	"fmt"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// TestReadmeTranslationInStep fails when README.ja.md has drifted from
// README.md: the Japanese README must keep the English one's structure (the
// same headings at the same levels in the same order), its fenced code blocks
// byte for byte, the same make/esbctl commands, links and table shapes, and
// each must point at the other at its top. Prose is free to differ; these are what a
// reader copies or navigates by.
func TestReadmeTranslationInStep(t *testing.T) {
	en := readDoc(t, "README.md")
	ja := readDoc(t, "README.ja.md")

	if got, want := ja.headings, en.headings; !slices.Equal(levels(got), levels(want)) {
		t.Errorf("heading levels differ:\n%s", sideBySide(want, got))
	}
	if len(ja.fences) != len(en.fences) {
		t.Errorf("README.md has %d fenced code blocks, README.ja.md %d", len(en.fences), len(ja.fences))
	}
	for i := range min(len(en.fences), len(ja.fences)) {
		if en.fences[i].text != ja.fences[i].text {
			t.Errorf("fenced code block %d differs: README.md line %d:\n%s\nREADME.ja.md line %d:\n%s",
				i+1, en.fences[i].line, en.fences[i].text, ja.fences[i].line, ja.fences[i].text)
		}
	}
	compareSets(t, "make/esbctl commands", en.commands, ja.commands)
	compareSets(t, "link targets", en.links, ja.links)
	if !slices.Equal(en.tables, ja.tables) {
		t.Errorf("tables (rows×columns, in order) differ: README.md %v, README.ja.md %v", en.tables, ja.tables)
	}
	if !slices.Contains(en.topLinks, "README.ja.md") {
		t.Error("README.md does not link to README.ja.md above its first section")
	}
	if !slices.Contains(ja.topLinks, "README.md") {
		t.Error("README.ja.md does not link to README.md above its first section")
	}
}

// TestParseDoc keeps the parser honest: a fence's contents are not read as
// headings, tables or inline code; code spans may wrap lines; a word that
// only starts with "make" is not a command.
func TestParseDoc(t *testing.T) {
	src := "English: [README.md](README.md)\n" +
		"# Title\n\nRun `make\ndemo` and `esbctl ls -owner o1`, not `make-believe`.\n" +
		"```sh\n# not a heading\n| not | a table |\nesbctl status\n```\n" +
		"## Part\n\n| a | b |\n| --- | --- |\n| 1 | 2 |\n\nSee [docs](docs/x.md) and `KEEP=1 make demo`.\n" +
		"~~~\n```\n~~~\n"
	d := parseDoc(src)
	wantHeadings := []heading{{1, "Title", 2}, {2, "Part", 11}}
	if !slices.Equal(d.headings, wantHeadings) {
		t.Errorf("headings = %v, want %v", d.headings, wantHeadings)
	}
	if len(d.fences) != 2 || d.fences[0].text != "```sh\n# not a heading\n| not | a table |\nesbctl status\n```" ||
		d.fences[1].text != "~~~\n```\n~~~" {
		t.Errorf("fences = %+v", d.fences)
	}
	wantCommands := []string{"KEEP=1 make demo", "esbctl ls -owner o1", "make demo"}
	if !slices.Equal(d.commands, wantCommands) {
		t.Errorf("commands = %q, want %q", d.commands, wantCommands)
	}
	wantLinks := []string{"README.md", "docs/x.md"}
	if !slices.Equal(d.links, wantLinks) {
		t.Errorf("links = %q, want %q", d.links, wantLinks)
	}
	if want := []string{"3×2"}; !slices.Equal(d.tables, want) {
		t.Errorf("tables = %q, want %q", d.tables, want)
	}
	if want := []string{"README.md"}; !slices.Equal(d.topLinks, want) {
		t.Errorf("topLinks = %q, want %q", d.topLinks, want)
	}
}

type heading struct {
	level int
	text  string
	line  int
}

type fence struct {
	text string // the opening line through the closing one
	line int
}

type doc struct {
	headings []heading
	fences   []fence
	commands []string // inline code spans that run make or esbctl, sorted, unique
	links    []string // markdown link targets, sorted, unique
	tables   []string // "rows×columns" of each table, in order
	topLinks []string // link targets above the first section (## heading)
}

func readDoc(t *testing.T, name string) doc {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatalf("read %s: %v", name, err)
	}
	return parseDoc(string(b))
}

var (
	headingRE = regexp.MustCompile(`^(#{1,6})\s+(.*?)\s*#*\s*$`)
	fenceRE   = regexp.MustCompile("^ {0,3}(`{3,}|~{3,})")
	spanRE    = regexp.MustCompile("(`+)([^`]|[^`][\\s\\S]*?[^`])(`+)")
	commandRE = regexp.MustCompile(`(^|[\s=&;|(])(make|esbctl)(\s|$)`)
	linkRE    = regexp.MustCompile(`\]\(([^)\s]+)\)`)
)

// parseDoc reads the parts of a CommonMark document the test compares. It
// knows fences, ATX headings, pipe tables, code spans and inline links, which
// is all the READMEs use.
func parseDoc(src string) doc {
	var d doc
	var prose strings.Builder // everything outside fences, for spans and links
	lines := strings.Split(src, "\n")
	tableRows, tableCols := 0, 0
	endTable := func() {
		if tableRows > 0 {
			d.tables = append(d.tables, fmt.Sprintf("%d×%d", tableRows, tableCols))
		}
		tableRows, tableCols = 0, 0
	}
	for i := 0; i < len(lines); i++ {
		line := lines[i]
		if m := fenceRE.FindStringSubmatch(line); m != nil {
			endTable()
			start, marker := i, m[1]
			for i++; i < len(lines); i++ {
				if c := strings.TrimSpace(lines[i]); strings.HasPrefix(c, marker) && strings.Trim(c, marker[:1]) == "" {
					break
				}
			}
			end := min(i, len(lines)-1)
			d.fences = append(d.fences, fence{strings.Join(lines[start:end+1], "\n"), start + 1})
			prose.WriteString("\n")
			continue
		}
		prose.WriteString(line + "\n")
		if len(d.headings) < 2 {
			for _, m := range linkRE.FindAllStringSubmatch(line, -1) {
				d.topLinks = append(d.topLinks, m[1])
			}
		}
		if m := headingRE.FindStringSubmatch(line); m != nil {
			endTable()
			d.headings = append(d.headings, heading{len(m[1]), m[2], i + 1})
			continue
		}
		if t := strings.TrimSpace(line); strings.HasPrefix(t, "|") {
			tableRows++
			tableCols = max(tableCols, strings.Count(strings.Trim(t, "|"), "|")+1)
			continue
		}
		endTable()
	}
	endTable()

	commands := map[string]bool{}
	for _, m := range spanRE.FindAllStringSubmatch(prose.String(), -1) {
		if m[1] != m[3] {
			continue
		}
		code := strings.Join(strings.Fields(m[2]), " ")
		if commandRE.MatchString(code) {
			commands[code] = true
		}
	}
	d.commands = sortedKeys(commands)
	links := map[string]bool{}
	for _, m := range linkRE.FindAllStringSubmatch(prose.String(), -1) {
		links[m[1]] = true
	}
	d.links = sortedKeys(links)
	return d
}

func sortedKeys(m map[string]bool) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func levels(hs []heading) []int {
	out := make([]int, len(hs))
	for i, h := range hs {
		out[i] = h.level
	}
	return out
}

func sideBySide(en, ja []heading) string {
	var b strings.Builder
	for i := range max(len(en), len(ja)) {
		var l, r string
		if i < len(en) {
			l = fmt.Sprintf("%s %s (line %d)", strings.Repeat("#", en[i].level), en[i].text, en[i].line)
		}
		if i < len(ja) {
			r = fmt.Sprintf("%s %s (line %d)", strings.Repeat("#", ja[i].level), ja[i].text, ja[i].line)
		}
		fmt.Fprintf(&b, "  %-60s | %s\n", l, r)
	}
	return "  README.md | README.ja.md\n" + b.String()
}

// compareSets reports what one README has and the other lacks, ignoring the
// link each README makes to the other.
func compareSets(t *testing.T, what string, en, ja []string) {
	t.Helper()
	skip := map[string]bool{"README.md": true, "README.ja.md": true}
	var onlyEN, onlyJA []string
	for _, s := range en {
		if !skip[s] && !slices.Contains(ja, s) {
			onlyEN = append(onlyEN, s)
		}
	}
	for _, s := range ja {
		if !skip[s] && !slices.Contains(en, s) {
			onlyJA = append(onlyJA, s)
		}
	}
	if len(onlyEN) > 0 || len(onlyJA) > 0 {
		t.Errorf("%s differ: only in README.md %q; only in README.ja.md %q", what, onlyEN, onlyJA)
	}
}
