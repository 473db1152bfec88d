package agent

import (
	"context"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edge-serverless-box/esbnet/nat"
)

// nodeCollector reads the NAT counters and the address usage at scrape
// time, so nothing polls between scrapes.
type nodeCollector struct {
	a        *Agent
	nat      nat.DNAT // nil when the agent manages no NAT rules
	capacity uint64   // addresses the network can hand out (0: unknown)
	natConns *prometheus.Desc
	natBytes *prometheus.Desc
	addrs    *prometheus.Desc
}

func newNodeCollector(a *Agent, m nat.DNAT, capacity uint64) *nodeCollector {
	return &nodeCollector{a: a, nat: m, capacity: capacity,
		natConns: prometheus.NewDesc("esb_nat_forward_connections_total",
			"Connections DNAT-ed per forward (the NAT chain sees the first packet of each).", []string{"proto", "port", "to"}, nil),
		natBytes: prometheus.NewDesc("esb_nat_forward_first_packet_bytes_total",
			"Bytes of the first packets of the DNAT-ed connections per forward.", []string{"proto", "port", "to"}, nil),
		addrs: prometheus.NewDesc("esb_network_addresses",
			"Addresses of the esb network: used by this agent's workers, and free of the range's capacity.", []string{"state"}, nil),
	}
}

func (c *nodeCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.natConns
	ch <- c.natBytes
	ch <- c.addrs
}

func (c *nodeCollector) Collect(ch chan<- prometheus.Metric) {
	used := uint64(len(c.a.List("")))
	ch <- prometheus.MustNewConstMetric(c.addrs, prometheus.GaugeValue, float64(used), "used")
	if c.capacity > 0 {
		ch <- prometheus.MustNewConstMetric(c.addrs, prometheus.GaugeValue, float64(c.capacity-min(used, c.capacity)), "free")
	}
	if c.nat == nil {
		return
	}
	counters, err := c.nat.Counters(context.Background())
	if err != nil {
		c.a.log.Warn("read NAT counters", "err", err)
		return
	}
	for _, f := range counters {
		labels := []string{f.Forward.Proto, strconv.Itoa(int(f.Forward.Port)), f.Forward.To.String()}
		ch <- prometheus.MustNewConstMetric(c.natConns, prometheus.CounterValue, float64(f.Packets), labels...)
		ch <- prometheus.MustNewConstMetric(c.natBytes, prometheus.CounterValue, float64(f.Bytes), labels...)
	}
}
