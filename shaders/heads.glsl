// The heads table of a layer's KV cache: KV head h owns the slots starting at heads[2h]
// (its offset, in slots), of which the first heads[2h+1] are retained prompt entries (a
// compacted cache; 0 for a full cache), followed by appended tokens. Per-head offsets let
// Ada-KV give heads different budgets in one buffer.
layout(std430, binding = HEADS_BINDING) readonly buffer Heads { uint heads[]; };
uint head_offset(uint h) { return heads[2u * h]; }
uint head_base(uint h) { return heads[2u * h + 1u]; }
// Slot of a head's key/value number j: a linear cache holds it at offset + j; a sliding-window
// layer's ring of `ring` slots (base 0, j the position) at offset + j % ring.
uint key_slot(uint offset, uint j, uint ring) { return offset + (ring != 0u ? j % ring : j); }
