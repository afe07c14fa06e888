package testenv

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// RedisCluster is a Redis Cluster of the test's own: masters on free
// loopback ports (no replicas), the 16384 slots split between them.
type RedisCluster struct {
	Nodes []*RedisServer
	// Addrs are the nodes' host:port (redis.cluster.addrs).
	Addrs []string
}

// StartRedisCluster starts n (default 3) cluster-enabled redis-servers,
// assigns the slots in even ranges, introduces the nodes to each other
// (CLUSTER MEET: what `redis-cli --cluster create` does) and waits until
// every node reports the cluster ok. Tests that need it skip, saying so,
// where redis-server is not installed.
func StartRedisCluster(t testing.TB, n int) *RedisCluster {
	t.Helper()
	if n <= 0 {
		n = 3
	}
	c := &RedisCluster{}
	for range n {
		node := startRedisServer(t, "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
			"--cluster-node-timeout", "5000", "--appendonly", "no")
		c.Nodes = append(c.Nodes, node)
		c.Addrs = append(c.Addrs, node.Addr)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	const slots = 16384
	for i, node := range c.Nodes {
		cl := redis.NewClient(&redis.Options{Addr: node.Addr})
		from, to := i*slots/n, (i+1)*slots/n-1
		err := cl.Do(ctx, "CLUSTER", "ADDSLOTSRANGE", from, to).Err()
		if err == nil && i > 0 {
			err = cl.ClusterMeet(ctx, "127.0.0.1", strconv.Itoa(c.Nodes[0].Port)).Err()
		}
		_ = cl.Close()
		if err != nil {
			t.Fatalf("testenv: set up cluster node %s: %v", node.Addr, err)
		}
	}
	for {
		ok := true
		for _, node := range c.Nodes {
			cl := redis.NewClient(&redis.Options{Addr: node.Addr})
			info, err := cl.ClusterInfo(ctx).Result()
			_ = cl.Close()
			if err != nil || !strings.Contains(info, "cluster_state:ok") || !strings.Contains(info, "cluster_known_nodes:"+strconv.Itoa(n)) {
				ok = false
				break
			}
		}
		if ok {
			return c
		}
		if ctx.Err() != nil {
			t.Fatalf("testenv: the cluster of %v did not get ready", c.Addrs)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
