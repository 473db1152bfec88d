// Command stress is the helper process of the esb-ipam property test. It
// runs a bounded number of random operations (ADD, repeated ADD, DEL and GC
// with a stale valid list) through package ipam against the real bbolt
// store, opening the store for each operation as the plugin does, and
// writes a JSON log (ipamtest.StressLog) of what it did, timed inside the
// locked transaction. It exits 1 on any error other than an exhausted
// range, after writing the log.
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/edge-serverless-box/esbnet/conf"
	"github.com/edge-serverless-box/esbnet/ipam"
	"github.com/edge-serverless-box/esbnet/tests/ns/ipamtest"
)

const ifName = "eth0"

type options struct {
	worker     string
	ops        int
	seed       int64
	maxLive    int
	gcRate     float64
	orphanRate float64
	gcSleep    time.Duration
}

func main() {
	var (
		confPath = flag.String("conf", "", "network configuration (JSON) with the esb-ipam \"ipam\" object")
		logPath  = flag.String("log", "", "where to write the JSON log")
		o        options
	)
	flag.StringVar(&o.worker, "worker", "w0", "worker name; prefixes this process's container IDs")
	flag.IntVar(&o.ops, "ops", 1000, "number of operations")
	flag.Int64Var(&o.seed, "seed", 1, "random seed")
	flag.IntVar(&o.maxLive, "max-live", 30, "most attachments this process keeps at once")
	flag.Float64Var(&o.gcRate, "gc-rate", 0.03, "share of operations that are GC")
	flag.Float64Var(&o.orphanRate, "orphan-rate", 0.05, "share of ADDs whose attachment is then forgotten")
	flag.DurationVar(&o.gcSleep, "gc-sleep", 100*time.Millisecond, "longest wait between a GC's listing and its run")
	flag.Parse()
	if *confPath == "" || *logPath == "" {
		fmt.Fprintln(os.Stderr, "stress: -conf and -log are required")
		os.Exit(2)
	}
	data, err := os.ReadFile(*confPath)
	if err != nil {
		fmt.Fprintln(os.Stderr, "stress:", err)
		os.Exit(2)
	}
	nc, err := conf.ParseIPAMNetConf(data)
	if err != nil {
		fmt.Fprintln(os.Stderr, "stress:", err)
		os.Exit(2)
	}
	log := ipamtest.StressLog{Worker: o.worker, Seed: o.seed}
	runErr := run(nc.IPAM, o, &log)
	if runErr != nil {
		log.Error = runErr.Error()
	}
	out, err := json.Marshal(&log)
	if err == nil {
		err = os.WriteFile(*logPath, out, 0o600)
	}
	if err := errors.Join(runErr, err); err != nil {
		fmt.Fprintf(os.Stderr, "stress %s: %v\n", o.worker, err)
		os.Exit(1)
	}
}

// worker is one process's view: the attachments it believes it holds.
type worker struct {
	cfg  *conf.IPAM
	o    options
	rng  *rand.Rand
	log  *ipamtest.StressLog
	live map[string]string // container ID -> address
	ids  []string          // keys of live, for random picks
	next int
}

func run(cfg *conf.IPAM, o options, log *ipamtest.StressLog) error {
	w := &worker{
		cfg:  cfg,
		o:    o,
		rng:  rand.New(rand.NewPCG(uint64(o.seed), uint64(o.seed)^0x9e3779b97f4a7c15)),
		log:  log,
		live: map[string]string{},
	}
	for range o.ops {
		var err error
		p := w.rng.Float64()
		switch {
		case p < o.gcRate:
			err = w.gc()
		case len(w.ids) >= o.maxLive || (len(w.ids) > 0 && p < o.gcRate+0.35):
			err = w.del()
		case len(w.ids) > 0 && p < o.gcRate+0.45:
			err = w.readd()
		default:
			err = w.add()
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// update opens the store, runs fn in one transaction and closes it, as the
// plugin does for every CNI call.
func (w *worker) update(fn func(ipam.Txn) error) error {
	s, err := ipam.OpenBolt(w.cfg.DataDir, w.cfg.Network, ipam.BoltOptions{LockWait: w.cfg.LockWait})
	if err != nil {
		return err
	}
	return errors.Join(s.Update(fn), s.Close())
}

func (w *worker) view(fn func(ipam.Txn) error) error {
	s, err := ipam.OpenBolt(w.cfg.DataDir, w.cfg.Network, ipam.BoltOptions{LockWait: w.cfg.LockWait})
	if err != nil {
		return err
	}
	return errors.Join(s.View(fn), s.Close())
}

func addrOf(a *ipam.Allocation) string {
	if a == nil || len(a.IPs) == 0 {
		return ""
	}
	return a.IPs[0].Addr().String()
}

func (w *worker) add() error {
	w.next++
	cid := fmt.Sprintf("%s-%d", w.o.worker, w.next)
	orphan := w.rng.Float64() < w.o.orphanRate
	if orphan {
		cid = ipamtest.OrphanPrefix + cid
	}
	var ev ipamtest.StressEvent
	err := w.update(func(tx ipam.Txn) error {
		now := time.Now()
		a, err := ipam.Allocate(tx, w.cfg, ipam.AttachmentID{ContainerID: cid, IfName: ifName}, now)
		if ipam.IsExhausted(err) {
			ev = ipamtest.StressEvent{Op: ipamtest.OpExhausted, Time: now.UnixNano(), ID: cid}
			return errors.Join(err, w.snapshot(tx, &ev))
		}
		if err != nil {
			return err
		}
		ev = ipamtest.StressEvent{Op: ipamtest.OpAdd, Time: now.UnixNano(), ID: cid, IP: addrOf(a)}
		return nil
	})
	if err != nil && !ipam.IsExhausted(err) {
		return fmt.Errorf("add %s: %w", cid, err)
	}
	w.log.Events = append(w.log.Events, ev)
	if err == nil && !orphan {
		w.live[cid] = ev.IP
		w.ids = append(w.ids, cid)
	}
	return nil
}

// snapshot records in ev what the store holds: its allocations and the
// number of addresses its free map marks used.
func (w *worker) snapshot(tx ipam.Txn, ev *ipamtest.StressEvent) error {
	err := tx.ForEachAllocation(func(a *ipam.Allocation) error {
		ev.Held = append(ev.Held, ipamtest.StressAlloc{ID: a.ID.ContainerID, IP: addrOf(a), Created: a.Created.UnixNano()})
		return nil
	})
	if err != nil {
		return err
	}
	ev.Used, _, err = ipam.Usage(tx, w.cfg.V4)
	return err
}

func (w *worker) pick() string { return w.ids[w.rng.IntN(len(w.ids))] }

func (w *worker) forget(cid string) {
	delete(w.live, cid)
	w.ids = slices.DeleteFunc(w.ids, func(s string) bool { return s == cid })
}

// logged runs op on the attachment of cid in one transaction and logs an
// event of kind with the address op returns.
func (w *worker) logged(kind, cid string, op func(ipam.Txn, ipam.AttachmentID, time.Time) (*ipam.Allocation, error)) error {
	var ev ipamtest.StressEvent
	err := w.update(func(tx ipam.Txn) error {
		now := time.Now()
		a, err := op(tx, ipam.AttachmentID{ContainerID: cid, IfName: ifName}, now)
		if err != nil {
			return err
		}
		ev = ipamtest.StressEvent{Op: kind, Time: now.UnixNano(), ID: cid, IP: addrOf(a)}
		return nil
	})
	if err != nil {
		return err
	}
	w.log.Events = append(w.log.Events, ev)
	return nil
}

func (w *worker) readd() error {
	cid := w.pick()
	err := w.logged(ipamtest.OpReAdd, cid, func(tx ipam.Txn, id ipam.AttachmentID, now time.Time) (*ipam.Allocation, error) {
		return ipam.Allocate(tx, w.cfg, id, now)
	})
	if err != nil {
		return fmt.Errorf("repeat add %s: %w", cid, err)
	}
	return nil
}

func (w *worker) del() error {
	cid := w.pick()
	err := w.logged(ipamtest.OpDel, cid, func(tx ipam.Txn, id ipam.AttachmentID, _ time.Time) (*ipam.Allocation, error) {
		return ipam.Release(tx, id)
	})
	if err != nil {
		return fmt.Errorf("del %s: %w", cid, err)
	}
	w.forget(cid)
	return nil
}

// gc lists the allocations, keeps all but the orphans as valid, waits a
// little (so ADDs finish after the listing) and runs GC with that stale
// list and the configured grace.
func (w *worker) gc() error {
	valid := map[ipam.AttachmentID]bool{}
	var listedAt time.Time
	err := w.view(func(tx ipam.Txn) error {
		listedAt = time.Now()
		return tx.ForEachAllocation(func(a *ipam.Allocation) error {
			if !strings.HasPrefix(a.ID.ContainerID, ipamtest.OrphanPrefix) {
				valid[a.ID] = true
			}
			return nil
		})
	})
	if err != nil {
		return fmt.Errorf("list allocations: %w", err)
	}
	if w.o.gcSleep > 0 {
		time.Sleep(time.Duration(w.rng.Int64N(int64(w.o.gcSleep))))
	}
	ev := ipamtest.StressEvent{Op: ipamtest.OpGC, ListedAt: listedAt.UnixNano()}
	err = w.update(func(tx ipam.Txn) error {
		now := time.Now()
		released, err := ipam.GC(tx, valid, now.Add(-w.cfg.GCGrace))
		if err != nil {
			return err
		}
		ev.Time = now.UnixNano()
		for _, a := range released {
			ev.Released = append(ev.Released, ipamtest.StressAlloc{
				ID: a.ID.ContainerID, IP: addrOf(a), Created: a.Created.UnixNano(),
			})
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("gc: %w", err)
	}
	w.log.Events = append(w.log.Events, ev)
	return nil
}
