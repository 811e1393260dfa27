// mac_gemm_core: one VTA GEMM step with int8 weights (multiply-accumulate baseline).
//
//   acc_out[j] <= acc_in[j] + sum_k x[k] * w[j][k]      (signed INP_W x WGT_W products)
//
// Same ports as shift_gemm_core (shift_p is ignored) so one testbench drives both.
module mac_gemm_core #(
    parameter BLOCK_IN   = 16,
    parameter BLOCK_OUT  = 16,
    parameter INP_W      = 8,
    parameter CODE_W     = 8,      // weight width
    parameter SHIFT_BITS = 4,      // unused; keeps the port list identical
    parameter ACC_W      = 32
) (
    input  wire                          clk,
    input  wire                          en,
    /* verilator lint_off UNUSEDSIGNAL */
    input  wire [SHIFT_BITS-1:0]         shift_p,
    /* verilator lint_on UNUSEDSIGNAL */
    input  wire [BLOCK_IN*INP_W-1:0]     inp,
    input  wire [BLOCK_OUT*BLOCK_IN*CODE_W-1:0] wgt,
    input  wire [BLOCK_OUT*ACC_W-1:0]    acc_in,
    output reg  [BLOCK_OUT*ACC_W-1:0]    acc_out
);
    integer j, k;
    reg signed [ACC_W-1:0]  sum;
    reg signed [INP_W-1:0]  x;
    reg signed [CODE_W-1:0] w;
    reg [BLOCK_OUT*ACC_W-1:0] next;

    always @* begin
        next = {BLOCK_OUT*ACC_W{1'b0}};
        for (j = 0; j < BLOCK_OUT; j = j + 1) begin
            sum = acc_in[j*ACC_W +: ACC_W];
            for (k = 0; k < BLOCK_IN; k = k + 1) begin
                x = inp[k*INP_W +: INP_W];
                w = wgt[(j*BLOCK_IN + k)*CODE_W +: CODE_W];
                sum = sum + x * w;
            end
            next[j*ACC_W +: ACC_W] = sum;
        end
    end

    always @(posedge clk) begin
        if (en) acc_out <= next;
    end
endmodule
