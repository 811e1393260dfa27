// tb_gemm: drives a GEMM core with vectors dumped by the Python simulator
// (simulator.dump_gemm_vectors) and checks every registered output.
//
// Compile-time settings (iverilog -D / -P):
//   -DSHIFT_CORE        test shift_gemm_core (default: mac_gemm_core)
//   -DVEC_DIR=\"dir\"    folder with inp.hex wgt.hex acc_in.hex acc_out.hex
//   -Ptb_gemm.BLOCK_IN=.. -Ptb_gemm.BLOCK_OUT=.. -Ptb_gemm.N=.. -Ptb_gemm.SHIFT_P=..
// Prints "RESULT errors=<e> vectors=<n>" and, per mismatch (first 10), the vector index.
`timescale 1ns/1ps
`ifndef VEC_DIR
`define VEC_DIR "."
`endif
module tb_gemm;
    parameter BLOCK_IN   = 4;
    parameter BLOCK_OUT  = 4;
    parameter N          = 1;
    parameter SHIFT_P    = 0;
    parameter SHIFT_BITS = 4;
    localparam IW = BLOCK_IN * 8;
    localparam WW = BLOCK_OUT * BLOCK_IN * 8;
    localparam AW = BLOCK_OUT * 32;

    reg [IW-1:0] inp_mem  [0:N-1];
    reg [WW-1:0] wgt_mem  [0:N-1];
    reg [AW-1:0] accin_mem[0:N-1];
    reg [AW-1:0] exp_mem  [0:N-1];

    reg clk = 0;
    reg en = 0;
    reg [IW-1:0] inp;
    reg [WW-1:0] wgt;
    reg [AW-1:0] acc_in;
    wire [AW-1:0] acc_out;
    wire [SHIFT_BITS-1:0] shift_p = SHIFT_P;

`ifdef SHIFT_CORE
    shift_gemm_core #(.BLOCK_IN(BLOCK_IN), .BLOCK_OUT(BLOCK_OUT), .SHIFT_BITS(SHIFT_BITS))
`else
    mac_gemm_core #(.BLOCK_IN(BLOCK_IN), .BLOCK_OUT(BLOCK_OUT), .SHIFT_BITS(SHIFT_BITS))
`endif
        dut (.clk(clk), .en(en), .shift_p(shift_p), .inp(inp), .wgt(wgt), .acc_in(acc_in),
             .acc_out(acc_out));

    always #5 clk = ~clk;

    integer i, errors;
    initial begin
        $readmemh({`VEC_DIR, "/inp.hex"}, inp_mem);
        $readmemh({`VEC_DIR, "/wgt.hex"}, wgt_mem);
        $readmemh({`VEC_DIR, "/acc_in.hex"}, accin_mem);
        $readmemh({`VEC_DIR, "/acc_out.hex"}, exp_mem);
        errors = 0;
        for (i = 0; i < N; i = i + 1) begin
            @(negedge clk);
            inp = inp_mem[i]; wgt = wgt_mem[i]; acc_in = accin_mem[i]; en = 1;
            @(posedge clk);
            #1;
            if (acc_out !== exp_mem[i]) begin
                errors = errors + 1;
                if (errors <= 10)
                    $display("MISMATCH vector %0d: got %h expected %h", i, acc_out, exp_mem[i]);
            end
        end
        $display("RESULT errors=%0d vectors=%0d", errors, N);
        $finish;
    end
endmodule
