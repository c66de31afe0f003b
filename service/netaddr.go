package service

import (
	"net/netip"
	"net/url"
	"slices"
	"strings"
)

// Where usher may fetch discovery documents and key sets from. A public
// address always; a loopback or private address only when the configuration
// says so by name: the issuer is on loopback, the issuer or jwks_uri URL
// writes that very address, or the issuer sets allow_private_network. Some
// addresses are never fetched, whatever the configuration says.

// addrClass is what an address is to the fetch rules; a higher class is
// more restricted.
type addrClass uint8

const (
	addrPublic addrClass = iota
	addrLoopback
	addrPrivate
	addrNever
)

// neverPrefixes are never fetched, whatever the configuration says: they
// lead to the host itself or to the cloud platform's metadata and credential
// services.
var neverPrefixes = prefixes(
	"0.0.0.0/8",          // "this network" (RFC 791, RFC 6890); 0.0.0.0 reaches the local host
	"169.254.0.0/16",     // IPv4 link-local (RFC 3927): 169.254.169.254 is the metadata service of AWS, Google Cloud, Azure, Oracle Cloud, OpenStack…; 169.254.170.2 and 169.254.170.23 serve AWS ECS and EKS credentials
	"224.0.0.0/4",        // multicast (RFC 5771)
	"255.255.255.255/32", // limited broadcast (RFC 919)
	"100.100.100.200/32", // Alibaba Cloud instance metadata service
	"168.63.129.16/32",   // Azure WireServer, the platform's host agent endpoint
	"192.0.0.192/32",     // Oracle Cloud Infrastructure Classic metadata service
	"::/128",             // unspecified (RFC 4291)
	"fe80::/10",          // IPv6 link-local (RFC 4291)
	"ff00::/8",           // IPv6 multicast (RFC 4291)
	"fd00:ec2::254/128",  // AWS instance metadata service over IPv6
	"fd00:ec2::23/128",   // AWS EKS Pod Identity agent over IPv6
	"fd20:ce::254/128",   // Google Cloud metadata server over IPv6
	"fd00:42::42/128",    // Scaleway metadata service over IPv6
)

// loopbackPrefixes lead to the host itself (RFC 1122, RFC 4291).
var loopbackPrefixes = prefixes("127.0.0.0/8", "::1/128")

// privatePrefixes are the special-purpose blocks that are not globally
// reachable (the IANA special-purpose address registries, RFC 6890). IPv6
// outside 2000::/3 is not global unicast at all (RFC 4291 §2.4): unique local
// fc00::/7, site-local fec0::/10, discard 100::/64, the reserved ::/8.
var privatePrefixes = prefixes(
	"10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", // private use (RFC 1918)
	"100.64.0.0/10",   // shared address space: carrier-grade NAT (RFC 6598)
	"192.0.0.0/24",    // IETF protocol assignments (RFC 6890)
	"192.0.2.0/24",    // documentation (RFC 5737)
	"198.51.100.0/24", // documentation (RFC 5737)
	"203.0.113.0/24",  // documentation (RFC 5737)
	"198.18.0.0/15",   // benchmarking (RFC 2544)
	"240.0.0.0/4",     // reserved (RFC 1112)
	"2001::/23",       // IETF protocol assignments (RFC 2928), Teredo included
	"2001:db8::/32",   // documentation (RFC 3849)
	"3fff::/20",       // documentation (RFC 9637)
)

// Prefixes that carry an IPv4 address inside an IPv6 one.
var (
	nat64WellKnown = netip.MustParsePrefix("64:ff9b::/96")   // RFC 6052 §2.1
	nat64LocalUse  = netip.MustParsePrefix("64:ff9b:1::/48") // RFC 8215
	sixToFour      = netip.MustParsePrefix("2002::/16")      // RFC 3056
	v4InV6Reserved = netip.MustParsePrefix("::/96")          // IPv4-compatible, deprecated (RFC 4291 §2.5.5.1)
	globalUnicast  = netip.MustParsePrefix("2000::/3")       // RFC 4291 §2.4
)

func prefixes(ss ...string) []netip.Prefix {
	out := make([]netip.Prefix, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParsePrefix(s)
	}
	return out
}

func inAny(a netip.Addr, ps []netip.Prefix) bool {
	return slices.ContainsFunc(ps, func(p netip.Prefix) bool { return p.Contains(a) })
}

// classify says what a is to the fetch rules. An IPv4 address inside an
// IPv6 one (IPv4-mapped, NAT64, 6to4, IPv4-compatible) is judged by the
// IPv4 address it leads to, and never better than its prefix.
func classify(a netip.Addr) addrClass {
	a = a.WithZone("").Unmap() // IPv4-mapped ::ffff:a.b.c.d is a.b.c.d
	if a.Is4() {
		return classify4(a)
	}
	switch {
	case inAny(a, neverPrefixes):
		return addrNever
	case inAny(a, loopbackPrefixes):
		return addrLoopback
	case nat64WellKnown.Contains(a):
		return classify4(embedded(a, 12))
	case sixToFour.Contains(a):
		return classify4(embedded(a, 2))
	case nat64LocalUse.Contains(a):
		return max(addrPrivate, localNAT64(a))
	case v4InV6Reserved.Contains(a):
		return max(addrPrivate, classify4(embedded(a, 12)))
	case !globalUnicast.Contains(a), inAny(a, privatePrefixes):
		return addrPrivate
	}
	return addrPublic
}

func classify4(a netip.Addr) addrClass {
	switch {
	case inAny(a, neverPrefixes):
		return addrNever
	case inAny(a, loopbackPrefixes):
		return addrLoopback
	case inAny(a, privatePrefixes):
		return addrPrivate
	}
	return addrPublic
}

// embedded is the IPv4 address in bytes at..at+3 of a.
func embedded(a netip.Addr, at int) netip.Addr {
	b := a.As16()
	return netip.AddrFrom4([4]byte(b[at : at+4]))
}

// localNAT64 judges an address of the local-use NAT64 prefix, whose
// translator may use any prefix length of RFC 6052 §2.2 (48, 56, 64 or 96
// within it): addrNever when any reading of it is a never-fetched IPv4
// address, so that no translator leads to a metadata service.
func localNAT64(a netip.Addr) addrClass {
	b := a.As16()
	reads := [][4]byte{{b[12], b[13], b[14], b[15]}} // /96
	if b[8] == 0 {                                   // bits 64..71 are zero for the shorter prefixes
		reads = append(reads,
			[4]byte{b[6], b[7], b[9], b[10]},   // /48
			[4]byte{b[7], b[9], b[10], b[11]},  // /56
			[4]byte{b[9], b[10], b[11], b[12]}, // /64
		)
	}
	for _, r := range reads {
		// A reading in 0.0.0.0/8 is the prefix's own zero bits, not an
		// address a translator would reach.
		if classify4(netip.AddrFrom4(r)) == addrNever && r[0] != 0 {
			return addrNever
		}
	}
	return addrPrivate
}

// fetchPolicy is what one issuer's fetches may reach besides public
// addresses.
type fetchPolicy struct {
	loopback bool         // loopback addresses: the issuer or its configured jwks_uri is on loopback
	private  bool         // allow_private_network: every loopback and private address
	named    []netip.Addr // private addresses the issuer or jwks_uri URL writes out
}

// openPolicy is for a request that no issuer's rules govern (a client
// used without guardClient): only never-fetched addresses are refused.
var openPolicy = fetchPolicy{loopback: true, private: true}

// policyFor is the policy an issuer's configuration gives.
func policyFor(ic IssuerConfig) fetchPolicy {
	p := fetchPolicy{private: ic.AllowPrivateNetwork}
	p.name(ic.Issuer)
	p.name(ic.JWKSURI)
	return p
}

// name allows what a URL of the configuration writes out: loopback when its
// host is loopback, else the address it names (nothing for a host name).
func (p *fetchPolicy) name(s string) {
	u, err := url.Parse(s)
	if err != nil || u.Host == "" {
		return
	}
	if isLoopbackHost(u.Hostname()) {
		p.loopback = true
	} else if a, err := netip.ParseAddr(u.Hostname()); err == nil {
		p.named = append(p.named, a.WithZone("").Unmap())
	}
}

// allows reports a's class and whether the policy lets a fetch reach it.
func (p fetchPolicy) allows(a netip.Addr) (addrClass, bool) {
	c := classify(a)
	switch c {
	case addrPublic:
		return c, true
	case addrLoopback:
		return c, p.private || p.loopback || slices.Contains(p.named, a.WithZone("").Unmap())
	case addrPrivate:
		return c, p.private || slices.Contains(p.named, a.WithZone("").Unmap())
	}
	return c, false
}

// hostAllowed checks a URL's host before anything is sent: an address
// written in the URL, or the name "localhost". Other names are checked when
// they are resolved. nil when allowed.
func (p fetchPolicy) hostAllowed(what, host string) *refusedError {
	a, err := netip.ParseAddr(host)
	if err != nil {
		if !isLoopbackHost(host) {
			return nil
		}
		a = netip.IPv6Loopback()
	}
	if c, ok := p.allows(a); !ok {
		return &refusedError{what: what, class: c, addr: a}
	}
	return nil
}

// refusedError is a fetch the address rules refused, worded for callers:
// the class of address, never the address itself.
type refusedError struct {
	what     string // "key set URL" or "discovery URL"
	class    addrClass
	resolved bool       // the address came from DNS, not from the URL
	addr     netip.Addr // for the log only
}

func (e *refusedError) Error() string {
	verb := "names"
	if e.resolved {
		verb = "resolves to"
	}
	if e.class == addrNever {
		return "refused: the " + e.what + " " + verb + " a link-local, multicast or cloud metadata address, which usher never fetches"
	}
	class, whose := "a private address", "an issuer's"
	if e.class == addrLoopback {
		class, whose = "a loopback address", "a non-loopback issuer's"
	}
	if strings.HasPrefix(e.what, "introspection") {
		return "refused: the " + e.what + " " + verb + " " + class + "; usher sends tokens to " + whose + " introspection endpoint at public addresses only, unless introspection.endpoint writes the address out (set allow_private_network: true on the issuer if it is served on your network)"
	}
	return "refused: the " + e.what + " " + verb + " " + class + "; usher fetches " + whose + " keys from public addresses only (set allow_private_network: true on the issuer if they are served on your network)"
}
