package testnet

import (
	"fmt"
	"io"
	"slices"
	"time"
)

// Percentile returns the p-th percentile (nearest rank) of ds.
func Percentile(ds []time.Duration, p float64) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(p/100*float64(len(s))+0.5) - 1
	return s[max(0, min(i, len(s)-1))]
}

// CreationRow writes the Markdown row "| what | from–from+99 | p50 | p99 |"
// of creations from..from+99 (1-based) of ds, and returns p50 and p99.
func CreationRow(w io.Writer, what string, ds []time.Duration, from int) (p50, p99 time.Duration) {
	win := ds[from-1 : from+99]
	p50, p99 = Percentile(win, 50), Percentile(win, 99)
	fmt.Fprintf(w, "| %s | %d–%d | %.1f ms | %.1f ms |\n", what, from, from+99, ms(p50), ms(p99))
	return p50, p99
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
