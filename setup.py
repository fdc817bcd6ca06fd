"""groie-tf: GRoIE (Generic RoI Extractor) for TensorFlow Model Garden."""

import setuptools

setuptools.setup(
    name='groie-tf',
    version='0.1.0',
    description=('GRoIE, the Generic RoI Extractor (Rossi, Karimi, Prati, '
                 'ICPR 2020), as tf_keras layers for TF Model Garden.'),
    long_description=open('README.md', encoding='utf-8').read(),
    long_description_content_type='text/markdown',
    license='Apache-2.0',
    packages=setuptools.find_packages(include=['groie_tf', 'groie_tf.*']),
    # The C++ RoIAlign gradient, compiled at first use (groie_tf/ops/native.py).
    package_data={'groie_tf.ops': ['kernels/*.cc']},
    entry_points={'console_scripts': ['groie-train=groie_tf.train:run']},
    python_requires='>=3.11',
    # The measured stack (see docs): Model Garden 2.20 pins TensorFlow 2.20,
    # and tf-keras must match TensorFlow's minor version. No
    # tensorflow-addons: it is archived and fails to import on TF 2.20.
    install_requires=[
        'tensorflow==2.20.*',
        'tf-models-official==2.20.0',
        'tf-keras==2.20.*',
        'pycocotools',
        'absl-py',
        'matplotlib',  # the level analysis and the ablation's plot
    ],
    # pytest-xdist: the README's test command runs two workers (the slow
    # tests spend most of their time tracing graphs on one core).
    extras_require={'test': ['pytest>=7', 'pytest-xdist>=3.2']},
)
