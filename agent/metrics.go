package agent

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the agent's Prometheus metrics.
type Metrics struct {
	acquire *prometheus.HistogramVec
	workers *prometheus.GaugeVec
	errors  *prometheus.CounterVec
	lostN   prometheus.Counter
	pullFB  prometheus.Counter
}

// NewMetrics registers the metrics with reg (nil: a private registry).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		acquire: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "esb", Subsystem: "agent", Name: "acquire_seconds",
			Help:    "Time to answer AcquireWorker, by whether the worker came from the warm pool.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"warm"}),
		workers: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "esb", Subsystem: "agent", Name: "workers",
			Help: "Live workers by state (idle in a warm pool, busy, paused).",
		}, []string{"state"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "esb", Subsystem: "agent", Name: "acquire_errors_total",
			Help: "Failed acquisitions by class.",
		}, []string{"class"}),
		lostN: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "esb", Subsystem: "agent", Name: "workers_lost_total",
			Help: "Workers whose container exited or vanished behind the agent's back, and were removed.",
		}),
		pullFB: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "esb", Subsystem: "agent", Name: "image_pull_fallbacks_total",
			Help: "Pulls under --image-pull-policy always that failed and used the local image instead.",
		}),
	}
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	reg.MustRegister(m.acquire, m.workers, m.errors, m.lostN, m.pullFB)
	return m
}

var codeNames = map[Code]string{Internal: "internal", Invalid: "invalid", NotFound: "not_found",
	Permission: "permission", Unavailable: "unavailable", Exhausted: "exhausted", NotReady: "not_ready", Precondition: "precondition"}

func (m *Metrics) observeAcquire(start time.Time, w *Worker, err error) {
	if err != nil {
		m.errors.WithLabelValues(codeNames[CodeOf(err)]).Inc()
		return
	}
	warm := "false"
	if w.Warm {
		warm = "true"
	}
	m.acquire.WithLabelValues(warm).Observe(time.Since(start).Seconds())
}

func (m *Metrics) setStates(c map[State]int) {
	for _, s := range []State{StateIdle, StateBusy, StatePaused} {
		m.workers.WithLabelValues(s.String()).Set(float64(c[s]))
	}
}

func (m *Metrics) lost() { m.lostN.Inc() }

func (m *Metrics) pullFallback() { m.pullFB.Inc() }
