"""The recipes' networks in Keras: the paper's three convolution blocks, and the layers the experimental recipes add."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from numpy.typing import NDArray

from ser_stream import EMOTIONS
from ser_stream.features import N_BINS, N_FFT, N_FRAMES, SAMPLE_RATE
from ser_stream.model import INPUT_NAME, OUTPUT_NAME
from training.backend import keras
from training.recipes import Recipe

DENSE_UNITS = 128  # the paper does not give the dense width


def hz_to_mel(hz: NDArray[np.float64]) -> NDArray[np.float64]:
    return 2595.0 * np.log10(1.0 + hz / 700.0)


@lru_cache(maxsize=1)
def mel_rows_matrix(oversampling: int = 8) -> NDArray[np.float32]:
    """[260 mel rows, 260 linear bins]: each row a triangular mel band of the linearly interpolated spectrum.

    Row centres are evenly spaced in mel from 0 Hz to the top bin, each band
    reaching its neighbours' centres. Bands are integrated on a grid
    ``oversampling`` times finer than the bins, so the narrow low bands
    interpolate between bins instead of falling between them; every row's
    weights sum to 1, so outputs stay in [0, 1].
    """
    bin_hz = np.arange(N_BINS) * SAMPLE_RATE / N_FFT
    fine_hz = np.linspace(0.0, bin_hz[-1], (N_BINS - 1) * oversampling + 1)
    position = fine_hz / (SAMPLE_RATE / N_FFT)  # fractional bin index
    lower = np.minimum(np.floor(position).astype(int), N_BINS - 2)
    interpolation = np.zeros((fine_hz.size, N_BINS))
    interpolation[np.arange(fine_hz.size), lower] = 1.0 - (position - lower)
    interpolation[np.arange(fine_hz.size), lower + 1] = position - lower
    centres = np.linspace(0.0, hz_to_mel(bin_hz[-1]), N_BINS)
    spacing = centres[1] - centres[0]
    bands = np.maximum(0.0, 1.0 - np.abs(hz_to_mel(fine_hz)[None, :] - centres[:, None]) / spacing)
    bands /= bands.sum(axis=1, keepdims=True)
    return (bands @ interpolation).astype(np.float32)


@keras.saving.register_keras_serializable(package="ser_stream")
class MelFrequencyRows(keras.layers.Layer):
    """Resamples the spectrogram's frequency rows (linear, 15.4 Hz apart) onto the mel scale.

    Below 1 kHz, where pitch and the first formant live, rows become about three
    times denser; above, bands widen. A change of pitch or vocal tract length
    then moves a pattern more nearly rigidly, which convolutions and pooling
    absorb. A fixed matrix inside the network, so the runtime's input is unchanged.
    """

    def call(self, inputs):
        matrix = keras.ops.convert_to_tensor(mel_rows_matrix(), dtype=inputs.dtype)
        return keras.ops.expand_dims(keras.ops.matmul(matrix, inputs[..., 0]), -1)


@keras.saving.register_keras_serializable(package="ser_stream")
class SpectralMeanChannel(keras.layers.Layer):
    """Adds a channel: the spectrogram minus each frequency row's mean over the window.

    A window's mean log spectrum is mostly who is speaking and through what
    (vocal tract, microphone, line); removing it — cepstral mean normalisation
    in the log-spectral domain — leaves how the spectrum moves, which is where
    emotion shows. The raw channel stays, so level cues such as spectral tilt
    are not lost. Inside the network, so the runtime's input is unchanged.
    """

    def call(self, inputs):
        centred = inputs - keras.ops.mean(inputs, axis=2, keepdims=True)
        return keras.ops.concatenate([inputs, centred], axis=-1)


@keras.saving.register_keras_serializable(package="ser_stream")
class GradientReversal(keras.layers.Layer):
    """The identity going forward; going back, the gradient times ``-strength`` (Ganin & Lempitsky 2015).

    Below it, the network is pushed to make what the layer above learns (here,
    who is speaking) harder to learn. ``strength`` is a weight, not a constant,
    so a callback can ramp it up as training goes; it is saved with the model.
    """

    def build(self, input_shape):
        self.strength = self.add_weight(shape=(), initializer="zeros", trainable=False, name="strength")

    def call(self, inputs):
        held = keras.ops.stop_gradient(inputs)
        return held - self.strength * (inputs - held)  # forward: exactly the input; backward: -strength


@keras.saving.register_keras_serializable(package="ser_stream")
class StyleMixing(keras.layers.Layer):
    """MixStyle (Zhou et al. 2021): in training, each example's statistics mixed with another's of the batch.

    Over ``axes`` each example has a mean and a spread: over time and frequency
    for every feature map ("channel"), or over time for every frequency row
    ("frequency", on the input: a voice's and a line's spectral colour). With
    probability ``probability`` a batch is normalised by its own statistics
    and re-coloured with a blend, weight ~ Beta(``alpha``, ``alpha``), of its
    own and a shuffled partner's, so what the network learns cannot lean on
    them. The identity at inference, and while ``enabled`` is False (batch-norm
    statistics are re-estimated on the inputs inference sees).
    """

    def __init__(self, axes: tuple[int, ...], probability: float = 0.5, alpha: float = 0.3, seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.axes = tuple(axes)
        self.probability = probability
        self.alpha = alpha
        self.seed = seed
        self.enabled = True
        self.seeds = keras.random.SeedGenerator(seed)

    def get_config(self):
        return {**super().get_config(), "axes": self.axes, "probability": self.probability, "alpha": self.alpha, "seed": self.seed}

    def call(self, inputs, training=None):
        if not training or not self.enabled:
            return inputs
        mean = keras.ops.stop_gradient(keras.ops.mean(inputs, axis=self.axes, keepdims=True))
        spread = keras.ops.stop_gradient(keras.ops.sqrt(keras.ops.var(inputs, axis=self.axes, keepdims=True) + 1e-6))
        batch = keras.ops.shape(inputs)[0]
        stat_shape = (batch,) + (1,) * (len(inputs.shape) - 1)
        weight = keras.random.beta(stat_shape, self.alpha, self.alpha, seed=self.seeds)
        partner = keras.random.shuffle(keras.ops.arange(batch), seed=self.seeds)
        mixed_mean = weight * mean + (1.0 - weight) * keras.ops.take(mean, partner, axis=0)
        mixed_spread = weight * spread + (1.0 - weight) * keras.ops.take(spread, partner, axis=0)
        restyled = (inputs - mean) / spread * mixed_spread + mixed_mean
        chosen = keras.random.uniform((), seed=self.seeds) < self.probability
        return keras.ops.where(chosen, restyled, inputs)


SPEAKER_OUTPUT = "speaker"


def build_model(recipe: Recipe, seed: int = 0, speakers: int = 0) -> keras.Model:
    """Conv 32 → pool → conv 64 → pool → conv 32 → pool, flatten, dense ReLU, softmax over 8.

    5×5 kernels without padding; 5×5 max-pools with stride 3 (overlapping pools
    that shrink each map about threefold), dropout 25 % before and 50 % after
    the dense layer. The improved recipe adds batch normalisation after each
    convolution and strides its first convolution by 2: the 5×5 kernel still
    sees every pixel, and the network costs about a quarter of the paper's, which
    is what lets a 2-core machine train it and serve 50 streams.

    A recipe with a speaker adversary and ``speakers`` > 0 gets a second output,
    ``speaker``: which of the training actors is speaking, read from the dense
    layer through a ``GradientReversal``. It exists for training only;
    ``emotion_network`` is the network that is evaluated and exported.
    """
    keras.utils.set_random_seed(seed)
    inputs = keras.Input(shape=(N_BINS, N_FRAMES, 1), name=INPUT_NAME)
    x = MelFrequencyRows(name="mel_frequency_rows")(inputs) if recipe.mel_rows else inputs
    x = SpectralMeanChannel(name="spectral_mean_channel")(x) if recipe.spectral_mean_channel else x
    x = StyleMixing(axes=(2, 3), seed=seed, name="frequency_style_mixing")(x) if recipe.style_mixing == "frequency" else x
    for layer, filters in enumerate(recipe.filters):
        stride = recipe.first_stride if layer == 0 else 1
        x = keras.layers.Conv2D(filters, 5, strides=stride, padding="valid", use_bias=not recipe.batch_norm)(x)
        if recipe.batch_norm:
            # Momentum 0.9, not Keras' 0.99: with ~30 steps an epoch the slow average lags
            # the weights so far that inference-mode outputs collapse to one class.
            x = keras.layers.BatchNormalization(momentum=0.9)(x)
        x = keras.layers.Activation("relu")(x)
        x = keras.layers.MaxPooling2D(pool_size=5, strides=3)(x)
        if recipe.style_mixing == "channel" and layer < 2:
            x = StyleMixing(axes=(1, 2), seed=seed + layer, name=f"style_mixing_{layer}")(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dropout(0.25)(x)
    dense = keras.layers.Dense(DENSE_UNITS, activation="relu")(x)
    x = keras.layers.Dropout(0.5)(dense)
    outputs = keras.layers.Dense(len(EMOTIONS), activation="softmax", name=OUTPUT_NAME)(x)
    if recipe.speaker_adversary > 0 and speakers > 0:
        reversed_features = GradientReversal(name="speaker_gradient_reversal")(dense)
        guess = keras.layers.Dense(DENSE_UNITS // 2, activation="relu")(reversed_features)
        speaker = keras.layers.Dense(speakers, activation="softmax", name=SPEAKER_OUTPUT)(guess)
        return keras.Model(inputs, {OUTPUT_NAME: outputs, SPEAKER_OUTPUT: speaker}, name=f"mittal2021_{recipe.name}")
    return keras.Model(inputs, outputs, name=f"mittal2021_{recipe.name}")


def emotion_network(model: keras.Model) -> keras.Model:
    """The model as the runtime sees it: spectrogram in, probabilities out (a training-only speaker head left off)."""
    if len(model.outputs) == 1:
        return model
    return keras.Model(model.inputs[0], model.get_layer(OUTPUT_NAME).output, name=model.name)
