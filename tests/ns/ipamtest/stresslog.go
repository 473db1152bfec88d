package ipamtest

// The stress helper (./stress) and the property test exchange a log of what
// each process did to the store. Every time is wall-clock Unix nanoseconds
// taken inside the locked store transaction, so events of different
// processes are totally ordered by the store's lock.

// Operations in a StressEvent.
const (
	OpAdd       = "add"       // a new attachment got IP
	OpReAdd     = "readd"     // a repeated ADD of a live attachment returned IP
	OpDel       = "del"       // the attachment was released; IP is what it held ("" when nothing)
	OpGC        = "gc"        // a GC released Released
	OpExhausted = "exhausted" // an ADD found no free address
)

// OrphanPrefix starts the container ID of attachments their owner forgets
// without DEL, as a crashed runtime would; only GC may release them, and GC
// must never release anything else.
const OrphanPrefix = "orphan-"

// StressEvent is one operation of one process.
type StressEvent struct {
	Op   string `json:"op"`
	Time int64  `json:"time"`
	ID   string `json:"id,omitempty"`
	IP   string `json:"ip,omitempty"`
	// ListedAt is when a GC read the allocations it kept (its stale valid list).
	ListedAt int64         `json:"listedAt,omitempty"`
	Released []StressAlloc `json:"released,omitempty"`
	// Held and Used are, for an exhausted ADD, the allocations the store
	// held and the addresses its free map marked used at that moment.
	Held []StressAlloc `json:"held,omitempty"`
	Used uint64        `json:"used,omitempty"`
}

// StressAlloc is an attachment and the address it held.
type StressAlloc struct {
	ID      string `json:"id"`
	IP      string `json:"ip"`
	Created int64  `json:"created"`
}

// StressLog is what one stress process writes when it ends.
type StressLog struct {
	Worker string        `json:"worker"`
	Seed   int64         `json:"seed"`
	Events []StressEvent `json:"events"`
	// Error is set when the process stopped on an unexpected error.
	Error string `json:"error,omitempty"`
}
