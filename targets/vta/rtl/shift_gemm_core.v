// shift_gemm_core: one VTA GEMM step with power-of-two (shift-code) weights.
//
//   acc_out[j] <= acc_in[j] + sum_k  sign(w[j][k]) * (x[k] << (P - p(w[j][k])))
//
// Weight code (docs/CONTRACTS.md): CODE_W-bit two's-complement code c.
//   c == 0  -> zero weight;  otherwise sign = c < 0 ? -1 : +1, p = |c| - 1.
// P is a per-stream control register (port `shift_p`), written by the host before a
// stream starts; it is not part of any instruction.  The shift amount q = P - p must lie
// in [0, 2^SHIFT_BITS - 1]; the compiler and the simulator reject codes that violate it,
// and the datapath only ever applies the low SHIFT_BITS bits of q (a defined shift).
//
// No multipliers: a barrel shifter, a conditional negate and an adder tree per output.
// Registered output (one GEMM uop per clock when `en` is high).
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
    localparam PROD_W = INP_W + (1 << SHIFT_BITS) - 1;   // |x << q| fits in PROD_W bits (signed)

    integer j, k;
    reg signed [ACC_W-1:0]   sum;
    reg signed [INP_W-1:0]   x;
    reg signed [CODE_W-1:0]  c;
    reg        [CODE_W-1:0]  mag;
    reg        [SHIFT_BITS-1:0] q;
    reg signed [PROD_W-1:0]  shifted;
    reg signed [PROD_W-1:0]  term;
    reg [BLOCK_OUT*ACC_W-1:0] next;

    always @* begin
        next = {BLOCK_OUT*ACC_W{1'b0}};
        for (j = 0; j < BLOCK_OUT; j = j + 1) begin
            sum = acc_in[j*ACC_W +: ACC_W];
            for (k = 0; k < BLOCK_IN; k = k + 1) begin
                x   = inp[k*INP_W +: INP_W];
                c   = wgt[(j*BLOCK_IN + k)*CODE_W +: CODE_W];
                mag = c[CODE_W-1] ? -c : c;
                // q = P - p = P - (|c| - 1) = P + 1 - |c|, low SHIFT_BITS bits only.
                q   = shift_p + 1'b1 - mag[SHIFT_BITS-1:0];
                shifted = $signed(x) <<< q;
                term = (c == 0) ? {PROD_W{1'b0}} : (c[CODE_W-1] ? -shifted : shifted);
                sum = sum + term;
            end
            next[j*ACC_W +: ACC_W] = sum;
        end
    end

    always @(posedge clk) begin
        if (en) acc_out <= next;
    end
endmodule
