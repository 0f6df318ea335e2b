// Shared by the generating subcommands (run, chat, perplexity, bench): model/device/sampling flags, the
// progress bar and the stats line. A thin layer over engine/llm.h.
#pragma once
#include <functional>
#include <string>
#include <vector>

#include "args.h"
#include "engine/llm.h"

namespace llm_cli {

// -m, --device, -v, -t, --kv, --kv-config, --kv-profile
std::vector<FlagSpec> model_flags();
// --temp, --top-k, --top-p, --min-p, --repeat-penalty, --repeat-last-n, --seed
std::vector<FlagSpec> sampling_flags();
std::vector<FlagSpec> concat(std::vector<FlagSpec> a, const std::vector<FlagSpec>& b);

// --device, or device_default() when absent (cpu when the KV spec is compressed: no CUDA path yet); with -v it
// prints the choice and why on stderr.
llm::Device chosen_device(const Args& a, bool say = true);
// --dtype (bf16 | f16) for device d; f16 with a device other than cuda throws saying why; -v prints the choice.
llm::DType chosen_dtype(const Args& a, llm::Device d);
llm::LoadOptions load_options(const Args& a);  // device, threads, progress bar when stderr is a terminal
llm::SamplerParams sampling_params(const Args& a);  // checked
int context_size(const Args& a, int def);       // -c, checked (> 0)
std::string read_text_file(const std::string& path);  // throws llm::Error naming the file

// A progress bar on stderr, drawn only when stderr is a terminal; call with 0..1, it ends the line at 1.
std::function<void(float)> progress_bar(const std::string& label);

// "prompt: 12 tokens 340.1 tok/s | generation: 64 tokens 41.2 tok/s | peak memory 210 MiB" on stderr.
void print_session_stats(const llm::Session& s);

}  // namespace llm_cli
