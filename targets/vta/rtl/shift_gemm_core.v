// shift_gemm_core: one VTA GEMM step with power-of-two (shift-code) weights.
//
//   acc_out[j] <= acc_in[j] + sum_k  sign(w[j][k]) * (x[k] << (P - p(w[j][k])))
//
// Weight code (docs/CONTRACTS.md): CODE_W-bit two's-complement code c.
//   c == 0  -> zero weight;  otherwise sign = c < 0 ? -1 : +1, p = |c| - 1.
// P is a per-stream control register (port `shift_p`), written by the host before a
// stream starts; it is not part of any instruction.  The shift amount q = P - p must lie
// in [0, 2^SHIFT_BITS - 1]; the compiler and the simulator reject codes that violate it,
// and the datapath only ever applies the low SHIFT_BITS bits of q (always a defined shift).
//
// No multipliers.  Per lane: zero-mask and conditional negate of the 8-bit input (a 9-bit
// value, cheaper than negating the shifted word), a barrel shifter, then a width-growing
// adder tree over BLOCK_IN lanes and one add of the accumulator.  BLOCK_IN must be a power
// of two.  Registered output: one GEMM uop per clock when `en` is high.
module shift_gemm_core #(
    parameter BLOCK_IN   = 16,
    parameter BLOCK_OUT  = 16,
    parameter INP_W      = 8,
    parameter CODE_W     = 8,
    parameter SHIFT_BITS = 4,
    parameter ACC_W      = 32
) (
    input  wire                          clk,
    input  wire                          en,
    input  wire [SHIFT_BITS-1:0]         shift_p,
    input  wire [BLOCK_IN*INP_W-1:0]     inp,      // x[k] at bits [k*INP_W +: INP_W]
    input  wire [BLOCK_OUT*BLOCK_IN*CODE_W-1:0] wgt, // w[j][k] at [(j*BLOCK_IN+k)*CODE_W +: CODE_W]
    input  wire [BLOCK_OUT*ACC_W-1:0]    acc_in,
    output reg  [BLOCK_OUT*ACC_W-1:0]    acc_out
);
    localparam XW     = INP_W + 1;                      // +-x fits in INP_W+1 bits
    localparam PW     = XW + (1 << SHIFT_BITS) - 1;     // (+-x) << q fits in PW bits
    localparam LOG_IN = $clog2(BLOCK_IN);

    wire [BLOCK_OUT*ACC_W-1:0] next;

    genvar j, k, L;
    generate
        for (j = 0; j < BLOCK_OUT; j = j + 1) begin : col
            for (L = 0; L <= LOG_IN; L = L + 1) begin : lvl
                // level L holds BLOCK_IN >> L partial sums of PW + L bits
                wire [(BLOCK_IN >> L) * (PW + L) - 1:0] v;
                if (L == 0) begin : leaves
                    for (k = 0; k < BLOCK_IN; k = k + 1) begin : lane
                        wire signed [INP_W-1:0]  x   = inp[k*INP_W +: INP_W];
                        wire        [CODE_W-1:0] c   = wgt[(j*BLOCK_IN + k)*CODE_W +: CODE_W];
                        wire                     neg = c[CODE_W-1];
                        wire                     nz  = |c;
                        // low SHIFT_BITS bits of |c| (negation's low bits need only low bits)
                        wire [SHIFT_BITS-1:0]    mag = neg ? (~c[SHIFT_BITS-1:0] + 1'b1)
                                                           : c[SHIFT_BITS-1:0];
                        // q = P - p = P + 1 - |c|, low SHIFT_BITS bits only
                        wire [SHIFT_BITS-1:0]    q   = shift_p + 1'b1 - mag;
                        wire signed [XW-1:0]     xe  = {x[INP_W-1], x};
                        wire signed [XW-1:0]     xs  = nz ? (neg ? -xe : xe) : {XW{1'b0}};
                        wire signed [PW-1:0]     xw  = {{(PW-XW){xs[XW-1]}}, xs};
                        assign v[k*PW +: PW] = xw <<< q;
                    end
                end else begin : sums
                    for (k = 0; k < (BLOCK_IN >> L); k = k + 1) begin : add
                        wire signed [PW+L-2:0] a = lvl[L-1].v[(2*k)   * (PW+L-1) +: PW+L-1];
                        wire signed [PW+L-2:0] b = lvl[L-1].v[(2*k+1) * (PW+L-1) +: PW+L-1];
                        wire signed [PW+L-1:0] s = a + b;
                        assign v[k*(PW+L) +: PW+L] = s;
                    end
                end
            end
            wire signed [PW+LOG_IN-1:0] total = lvl[LOG_IN].v;
            wire signed [ACC_W-1:0]     acc   = acc_in[j*ACC_W +: ACC_W];
            if (PW + LOG_IN < ACC_W) begin : ext
                assign next[j*ACC_W +: ACC_W] =
                    acc + {{(ACC_W-PW-LOG_IN){total[PW+LOG_IN-1]}}, total};
            end else begin : wrap   // wider than the accumulator: wrap-around, like int32
                assign next[j*ACC_W +: ACC_W] = acc + total[ACC_W-1:0];
            end
        end
    endgenerate

    always @(posedge clk) begin
        if (en) acc_out <= next;
    end
endmodule
