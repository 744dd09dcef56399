// Package ring maps keys to partitions and (in the cluster release)
// partitions to replica sets on a consistent-hash ring. It is pure: no
// networking, no clocks, no state beyond what its callers hand it.
package ring
