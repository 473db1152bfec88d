package ipam

import (
	"encoding/binary"
	"math/bits"
	"net/netip"
)

// The free map is a bitmap split into chunks of chunkSize addresses, each
// keyed by its first address. A chunk with no address in use is not stored,
// so the map's size follows the allocations, not the range: an IPv6 /64
// costs nothing until it is used.
const (
	chunkBits  = 12
	chunkSize  = 1 << chunkBits
	chunkWords = chunkSize / 64
	// ChunkBytes is the encoded size of one chunk.
	ChunkBytes = chunkWords * 8
)

// Bitmap is one chunk of the free map: bit i set means the address at
// offset i from the chunk's base is in use.
type Bitmap [chunkWords]uint64

func (b *Bitmap) get(i uint) bool { return b[i/64]&(1<<(i%64)) != 0 }
func (b *Bitmap) set(i uint)      { b[i/64] |= 1 << (i % 64) }
func (b *Bitmap) clear(i uint)    { b[i/64] &^= 1 << (i % 64) }

// Empty reports whether no bit is set.
func (b *Bitmap) Empty() bool {
	for _, w := range b {
		if w != 0 {
			return false
		}
	}
	return true
}

// firstZero returns the lowest clear bit in [lo, hi], if any.
func (b *Bitmap) firstZero(lo, hi uint) (uint, bool) {
	for w := lo / 64; w <= hi/64; w++ {
		free := ^b[w]
		if w == lo/64 {
			free &= ^uint64(0) << (lo % 64)
		}
		if free == 0 {
			continue
		}
		i := w*64 + uint(bits.TrailingZeros64(free))
		if i > hi {
			return 0, false
		}
		return i, true
	}
	return 0, false
}

// count returns the number of set bits in [lo, hi].
func (b *Bitmap) count(lo, hi uint) uint64 {
	var n uint64
	for w := lo / 64; w <= hi/64; w++ {
		m := ^uint64(0)
		if w == lo/64 {
			m &= ^uint64(0) << (lo % 64)
		}
		if w == hi/64 && hi%64 != 63 {
			m &= (uint64(1) << (hi%64 + 1)) - 1
		}
		n += uint64(bits.OnesCount64(b[w] & m))
	}
	return n
}

// MarshalBinary encodes the chunk as ChunkBytes little-endian bytes.
func (b *Bitmap) MarshalBinary() ([]byte, error) {
	out := make([]byte, ChunkBytes)
	for i, w := range b {
		binary.LittleEndian.PutUint64(out[i*8:], w)
	}
	return out, nil
}

// UnmarshalBinary decodes a chunk written by MarshalBinary.
func (b *Bitmap) UnmarshalBinary(data []byte) error {
	if len(data) != ChunkBytes {
		return errCorrupt("chunk of %d bytes, want %d", len(data), ChunkBytes)
	}
	for i := range b {
		b[i] = binary.LittleEndian.Uint64(data[i*8:])
	}
	return nil
}

// u128 is an address as a 128-bit unsigned integer (IPv4 in the low 32 bits).
type u128 struct{ hi, lo uint64 }

func toU(a netip.Addr) u128 {
	if a.Is4() {
		b := a.As4()
		return u128{0, uint64(binary.BigEndian.Uint32(b[:]))}
	}
	b := a.As16()
	return u128{binary.BigEndian.Uint64(b[:8]), binary.BigEndian.Uint64(b[8:])}
}

func (u u128) addr(v4 bool) netip.Addr {
	if v4 {
		var b [4]byte
		binary.BigEndian.PutUint32(b[:], uint32(u.lo))
		return netip.AddrFrom4(b)
	}
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], u.hi)
	binary.BigEndian.PutUint64(b[8:], u.lo)
	return netip.AddrFrom16(b)
}

func (u u128) cmp(v u128) int {
	switch {
	case u.hi < v.hi || (u.hi == v.hi && u.lo < v.lo):
		return -1
	case u == v:
		return 0
	default:
		return 1
	}
}

// add returns u+n and whether it overflowed 128 bits.
func (u u128) add(n uint64) (u128, bool) {
	lo, c := bits.Add64(u.lo, n, 0)
	hi, c2 := bits.Add64(u.hi, 0, c)
	return u128{hi, lo}, c2 != 0
}

func (u u128) chunkBase() u128 { return u128{u.hi, u.lo &^ (chunkSize - 1)} }
func (u u128) offset() uint    { return uint(u.lo & (chunkSize - 1)) }

// ChunkBase returns the first address of the chunk holding a.
func ChunkBase(a netip.Addr) netip.Addr { return toU(a).chunkBase().addr(a.Is4()) }
