package ipamtest

import (
	"cmp"
	"fmt"
	"math"
	"net/netip"
	"slices"
	"strings"

	"github.com/edge-serverless-box/esbnet/conf"
)

// event is one logged operation of the property test, from a stress
// process or from the test's own plugin calls.
//
// The stress processes time every event inside the store's lock, exactly.
// An operation through the plugin is known only to lie within its exec:
// an ADD is logged at the exec's end (Time) with startMin its start, a DEL
// at the exec's start (Time) with endMax its end. So an attachment is
// certainly held from Time of its ADD to Time of its release, and possibly
// from startMin to endMax.
type event struct {
	StressEvent
	src      string
	startMin int64
	endMax   int64
}

// hold is one attachment holding one address: certainly over [start, end),
// possibly over [startMin, endMax).
type hold struct {
	id, ip, src     string
	startMin, start int64
	// end and endMax are math.MaxInt64 while the address is held.
	end, endMax int64
	orphan      bool
}

// checker replays the merged logs in time order and collects every
// violation of the IPAM contract it finds.
type checker struct {
	rng        conf.Range
	grace      int64
	capacity   uint64
	holds      map[string]*hold // held at the replay's current time, by container ID
	all        []*hold
	errs       []string
	gcReleased int
	staleGCs   int // GCs whose valid list missed a live attachment
	exhausted  []event
}

func newChecker(rng conf.Range, grace int64, capacity uint64) *checker {
	return &checker{rng: rng, grace: grace, capacity: capacity, holds: map[string]*hold{}}
}

func (c *checker) fail(format string, args ...any) {
	c.errs = append(c.errs, fmt.Sprintf(format, args...))
}

// run replays events (in any order), then checks every exhausted ADD
// against the whole history and that no address was held by two
// attachments at once.
func (c *checker) run(events []event) {
	slices.SortStableFunc(events, func(a, b event) int { return cmp.Compare(a.Time, b.Time) })
	for _, ev := range events {
		c.apply(ev)
	}
	byID := map[string]*hold{}
	for _, h := range c.all {
		byID[h.id] = h
	}
	for _, ev := range c.exhausted {
		c.compareHeld(ev, byID)
	}
	c.overlaps()
}

func (c *checker) apply(ev event) {
	switch ev.Op {
	case OpAdd:
		if h := c.holds[ev.ID]; h != nil {
			c.fail("%s: ADD of %s at %d, which already holds %s", ev.src, ev.ID, ev.Time, h.ip)
			return
		}
		a, err := netip.ParseAddr(ev.IP)
		if err != nil || !c.rng.Contains(a) || c.rng.Reserved(a) {
			c.fail("%s: ADD of %s at %d got %q, not a free address of %s", ev.src, ev.ID, ev.Time, ev.IP, c.rng)
		}
		h := &hold{id: ev.ID, ip: ev.IP, src: ev.src, startMin: ev.Time, start: ev.Time, end: math.MaxInt64, endMax: math.MaxInt64,
			orphan: strings.HasPrefix(ev.ID, OrphanPrefix)}
		if ev.startMin != 0 {
			h.startMin = min(h.startMin, ev.startMin)
		}
		c.holds[ev.ID] = h
		c.all = append(c.all, h)
	case OpReAdd:
		h := c.holds[ev.ID]
		switch {
		case h == nil:
			c.fail("%s: repeated ADD of %s at %d got %s, but the logs say it holds nothing (lost)", ev.src, ev.ID, ev.Time, ev.IP)
		case h.ip != ev.IP:
			c.fail("%s: repeated ADD of %s at %d got %s, it holds %s", ev.src, ev.ID, ev.Time, ev.IP, h.ip)
		}
	case OpDel:
		h := c.holds[ev.ID]
		if h == nil {
			c.fail("%s: DEL of %s at %d released %q, but the logs say it held nothing (released by someone else)", ev.src, ev.ID, ev.Time, ev.IP)
			return
		}
		if ev.IP != h.ip {
			c.fail("%s: DEL of %s at %d released %q, it held %s (lost)", ev.src, ev.ID, ev.Time, ev.IP, h.ip)
		}
		h.end, h.endMax = ev.Time, max(ev.Time, ev.endMax)
		delete(c.holds, ev.ID)
	case OpGC:
		c.gc(ev)
	case OpExhausted:
		c.exhausted = append(c.exhausted, ev) // checked once every hold is known
	default:
		c.fail("%s: unknown operation %q", ev.src, ev.Op)
	}
}

// compareHeld checks an exhausted ADD: the store was full (its free map
// marked every address used), held one allocation per used address, and
// held what the logs say: every allocation it held was possibly held per
// the logs, and every attachment certainly holding per the logs was in it.
func (c *checker) compareHeld(ev event, byID map[string]*hold) {
	t := ev.Time
	if ev.Used != c.capacity || uint64(len(ev.Held)) != ev.Used {
		c.fail("%s: ADD of %s at %d found %s exhausted, the free map marked %d of %d used and the store held %d allocations",
			ev.src, ev.ID, t, c.rng, ev.Used, c.capacity, len(ev.Held))
	}
	inStore := map[string]string{}
	for _, a := range ev.Held {
		inStore[a.ID] = a.IP
		h := byID[a.ID]
		if h == nil || h.ip != a.IP || t <= h.startMin || t >= h.endMax {
			c.fail("%s: at %d the store held %s for %s, which the logs do not", ev.src, t, a.IP, a.ID)
		}
	}
	for _, h := range c.all {
		if h.start < t && t < h.end && inStore[h.id] != h.ip {
			c.fail("%s: at %d the logs say %s holds %s, the store held %q", ev.src, t, h.id, h.ip, inStore[h.id])
		}
	}
}

// gc checks one GC: it released only orphans older than the grace, with
// the addresses they held, and every such orphan.
func (c *checker) gc(ev event) {
	cutoff := ev.Time - c.grace
	for _, r := range ev.Released {
		h := c.holds[r.ID]
		switch {
		case h == nil:
			c.fail("%s: GC at %d released %s (%s), which the logs say holds nothing", ev.src, ev.Time, r.ID, r.IP)
			continue
		case h.ip != r.IP:
			c.fail("%s: GC at %d released %s holding %s, the logs say it holds %s", ev.src, ev.Time, r.ID, r.IP, h.ip)
		case !h.orphan:
			c.fail("%s: GC at %d (valid list from %d) released live attachment %s (%s, created %d)",
				ev.src, ev.Time, ev.ListedAt, r.ID, r.IP, r.Created)
		case r.Created >= cutoff:
			c.fail("%s: GC at %d released %s created %d, within the grace", ev.src, ev.Time, r.ID, r.Created)
		}
		h.end, h.endMax = ev.Time, ev.Time
		delete(c.holds, r.ID)
		c.gcReleased++
	}
	stale := false
	for _, h := range c.holds {
		if h.orphan && h.start < cutoff {
			c.fail("%s: GC at %d kept orphan %s (%s) created %d, before the cutoff %d", ev.src, ev.Time, h.id, h.ip, h.start, cutoff)
		}
		// Added after the listing, so missing from the valid list: only
		// the grace kept it.
		stale = stale || (!h.orphan && h.startMin > ev.ListedAt)
	}
	if stale {
		c.staleGCs++
	}
}

// overlaps fails for every address held by two attachments whose
// [add, release) intervals certainly overlap.
func (c *checker) overlaps() {
	byIP := map[string][]*hold{}
	for _, h := range c.all {
		byIP[h.ip] = append(byIP[h.ip], h)
	}
	for ip, hs := range byIP {
		slices.SortFunc(hs, func(a, b *hold) int { return cmp.Compare(a.start, b.start) })
		prev := hs[0]
		for _, h := range hs[1:] {
			if h.start < prev.end {
				c.fail("address %s held by %s (%s, from %d to %d) and %s (%s, from %d)",
					ip, prev.id, prev.src, prev.start, prev.end, h.id, h.src, h.start)
			}
			if h.end > prev.end {
				prev = h
			}
		}
	}
}

// maxReuse is how many attachments the most used address went to.
func (c *checker) maxReuse() (addrs, most int) {
	n := map[string]int{}
	for _, h := range c.all {
		n[h.ip]++
		most = max(most, n[h.ip])
	}
	return len(n), most
}
