package agent

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"time"
)

// poolKey identifies interchangeable workers: same function, image, env
// and limits.
func poolKey(r AcquireRequest) string {
	h := sha256.New()
	fmt.Fprintf(h, "%s\x00%s\x00%d\x00%d\x00", r.Function, r.Image, r.MemoryBytes, r.CPUMillis)
	keys := make([]string, 0, len(r.Env))
	for k := range r.Env {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		fmt.Fprintf(h, "%s=%s\x00", k, r.Env[k])
	}
	return hex.EncodeToString(h.Sum(nil)[:8])
}

// refill tops the pool of key up to PoolMinIdle in the background.
func (a *Agent) refill(key string, r AcquireRequest) {
	if a.cfg.PoolMinIdle <= 0 {
		return
	}
	if !a.table.startRefill(key) {
		return
	}
	spec := r
	spec.Owner, spec.RequestID = "", ""
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		defer a.table.endRefill(key)
		for a.table.idle(key) < a.cfg.PoolMinIdle {
			ctx, cancel := context.WithTimeout(context.Background(), a.cfg.ReadyTimeout+time.Minute)
			_, err := a.create(ctx, spec, key, "")
			cancel()
			if err != nil {
				a.log.Warn("refill warm pool", "function", spec.Function, "err", err)
				return
			}
		}
	}()
}
