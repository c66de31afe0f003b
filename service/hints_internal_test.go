package service

import "testing"

// Every kind of malformed token has a hint of its own choosing.
func TestMalformedHints_EveryKind(t *testing.T) {
	for k := malformedShape; k < numMalformedKinds; k++ {
		if malformedHints[k] == "" {
			t.Errorf("malformed kind %d has no hint", k)
		}
	}
	if len(malformedHints) != int(numMalformedKinds) {
		t.Errorf("%d hints for %d kinds", len(malformedHints), numMalformedKinds)
	}
}

// editDistance is Levenshtein's distance, or its bound once the distance
// reaches it; closestString picks the nearest candidate, the first of equals.
func TestEditDistance(t *testing.T) {
	row := make([]int, 2*(maxEditBytes+1))
	for _, c := range []struct {
		a, b string
		want int
	}{
		{"", "", 0}, {"", "abc", 3}, {"abc", "", 3}, {"kitten", "sitting", 3}, {"flaw", "lawn", 2},
		{"https://auth.example.com", "https://auth.example.com/", 1}, {"intention", "execution", 5},
	} {
		if got := editDistance(c.a, c.b, maxEditBytes+1, row); got != c.want {
			t.Errorf("editDistance(%q, %q) = %d, want %d", c.a, c.b, got, c.want)
		}
		if c.want > 0 {
			if got := editDistance(c.a, c.b, c.want, row); got != c.want {
				t.Errorf("editDistance(%q, %q) bounded by %d = %d", c.a, c.b, c.want, got)
			}
			if got := editDistance(c.a, c.b, c.want+1, row); got != c.want {
				t.Errorf("editDistance(%q, %q) bounded by %d = %d", c.a, c.b, c.want+1, got)
			}
		}
	}
	if got := closestString("https://slow.usher.tst", []string{"https://a.test", "https://slow.usher.test", "https://slow.usher.test/"}); got != "https://slow.usher.test" {
		t.Errorf("closestString = %q", got)
	}
}
