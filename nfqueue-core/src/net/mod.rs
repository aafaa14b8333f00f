//! L3/L4 views of a packet payload, the flow tuple and mangling helpers.
